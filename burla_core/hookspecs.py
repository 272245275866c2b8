"""The plugin contract: the three hooks a backend implements. Start reading here.

A plugin is a module listed under the entry-point group ``burla`` in its package metadata::

    [project.entry-points.burla]
    my_backend = "my_package.burla_plugin"

and that module implements any of the hooks below with ``@burla_core.hookimpl``. Each hook hands
the plugin a ``register`` callback that takes one small record. The built-in ``local`` backend and
the default scheduler register this same way, so this API is used by the project every day.

A *backend* is what a user names with ``backend="..."``: a provisioner record, whose
``transport`` (and optional ``scheduler``) name the transport and scheduler records to use.
Names are unique: registering a name twice is an error, and so is implementing a hook that is
not declared here (a misspelt hook fails loudly instead of being ignored).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import pluggy

from .interfaces import Provisioner, Scheduler, Transport

hookspec = pluggy.HookspecMarker("burla")
hookimpl = pluggy.HookimplMarker("burla")


@dataclass(frozen=True)
class ProvisionerRecord:
    """A backend: `name` is what users pass as `backend=`."""

    name: str
    factory: Callable[[dict], Provisioner]  # called with the backend_options dict
    transport: str  # name of a registered TransportRecord
    scheduler: str = "default"  # name of a registered SchedulerRecord
    description: str = ""


@dataclass(frozen=True)
class TransportRecord:
    name: str
    factory: Callable[[dict], Transport]


@dataclass(frozen=True)
class SchedulerRecord:
    name: str
    factory: Callable[[], Scheduler]


@hookspec
def burla_register_provisioners(register: Callable[[ProvisionerRecord], None]) -> None:
    """Register backends: call ``register(ProvisionerRecord(...))`` once per backend."""


@hookspec
def burla_register_transports(register: Callable[[TransportRecord], None]) -> None:
    """Register transports: call ``register(TransportRecord(...))`` once per transport."""


@hookspec
def burla_register_schedulers(register: Callable[[SchedulerRecord], None]) -> None:
    """Register schedulers: call ``register(SchedulerRecord(...))`` once per scheduler."""
