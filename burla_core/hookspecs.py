"""The plugin contract: the three hooks a backend implements. Start reading here.

A plugin is a module listed under the entry-point group ``burla`` in its package metadata::

    [project.entry-points.burla]
    my_backend = "my_package.burla_plugin"

and that module implements any of the hooks below with ``@burla_core.hookimpl``. Each hook hands
the plugin a ``register`` callback that takes one small record. The built-in ``local`` backend and
the default scheduler register this same way, so this API is used by the project every day.

A *backend* is what a user names with ``backend="..."``: a provisioner record, whose
``transport`` (and optional ``scheduler``) name the transport and scheduler records to use, and
optionally a test environment record, with which the conformance suite brings the backend up on
127.0.0.1 by itself.
Names are unique: registering a name twice is an error, and so is implementing a hook that is
not declared here (a misspelt hook fails loudly instead of being ignored).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, ContextManager

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


@dataclass
class TestEnvironment:
    """What a backend's test environment gives the conformance suite: the backend_options every
    call passes, and environment variables set while the suite runs (both may be empty: "use
    what the user configured")."""

    backend_options: dict[str, str] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class TestEnvironmentRecord:
    """How `pytest --pyargs conformance_tests --burla-backend NAME` brings up what backend NAME
    needs on 127.0.0.1 (agents, a stand-in, a local cluster) with no other setup: `factory()`
    returns a context manager; entering it starts everything and yields a TestEnvironment,
    leaving it stops everything."""

    __test__ = False  # not a pytest test class, despite its name

    backend: str
    factory: Callable[[], ContextManager[TestEnvironment]]


TestEnvironment.__test__ = False  # type: ignore[attr-defined]


@hookspec
def burla_register_provisioners(register: Callable[[ProvisionerRecord], None]) -> None:
    """Register backends: call ``register(ProvisionerRecord(...))`` once per backend."""


@hookspec
def burla_register_transports(register: Callable[[TransportRecord], None]) -> None:
    """Register transports: call ``register(TransportRecord(...))`` once per transport."""


@hookspec
def burla_register_schedulers(register: Callable[[SchedulerRecord], None]) -> None:
    """Register schedulers: call ``register(SchedulerRecord(...))`` once per scheduler."""


@hookspec
def burla_register_test_environments(register: Callable[[TestEnvironmentRecord], None]) -> None:
    """Register test environments: call ``register(TestEnvironmentRecord(...))`` once per backend."""
