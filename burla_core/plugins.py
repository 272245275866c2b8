"""Loads plugins from the ``burla`` entry-point group and resolves a backend name to its parts."""

from __future__ import annotations

import threading
from dataclasses import dataclass

import pluggy

from . import hookspecs
from .errors import PluginError, UnknownBackend
from .hookspecs import ProvisionerRecord, SchedulerRecord, TestEnvironmentRecord, TransportRecord


@dataclass
class Registry:
    provisioners: dict[str, ProvisionerRecord]
    transports: dict[str, TransportRecord]
    schedulers: dict[str, SchedulerRecord]
    test_environments: dict[str, TestEnvironmentRecord]


_lock = threading.Lock()
_registry: Registry | None = None


def _collect(hook, kind: str, key=lambda record: record.name) -> dict:
    records: dict = {}

    def register(record) -> None:
        name = key(record)
        if name in records:
            raise PluginError(f"two plugins register a {kind} named {name!r}; uninstall one of them")
        records[name] = record

    hook(register=register)
    return records


def load_registry(extra_plugins: tuple = ()) -> Registry:
    """Build the plugin manager: entry points first, then `extra_plugins` (modules or objects
    with hookimpls, used by tests), then check that every hookimpl matches a hookspec."""
    manager = pluggy.PluginManager("burla")
    manager.add_hookspecs(hookspecs)
    try:
        manager.load_setuptools_entrypoints("burla")
    except Exception as error:  # an entry point whose module is gone or fails to import
        raise PluginError(
            f"a burla plugin could not be loaded ({type(error).__name__}: {error}). An installed "
            "package lists a module under the 'burla' entry points that does not import: reinstall "
            "it (for this checkout: pip install -e .) or uninstall it."
        ) from error
    for plugin in extra_plugins:
        manager.register(plugin)
    try:
        manager.check_pending()
    except pluggy.PluginValidationError as error:
        raise PluginError(f"a burla plugin implements a hook that does not exist: {error}") from error
    registry = Registry(
        provisioners=_collect(manager.hook.burla_register_provisioners, "backend"),
        transports=_collect(manager.hook.burla_register_transports, "transport"),
        schedulers=_collect(manager.hook.burla_register_schedulers, "scheduler"),
        test_environments=_collect(manager.hook.burla_register_test_environments, "test environment for backend", lambda record: record.backend),
    )
    if not registry.provisioners:
        raise PluginError("no burla backend is installed: is the package installed (pip install -e .)?")
    return registry


def registry() -> Registry:
    global _registry
    with _lock:
        if _registry is None:
            _registry = load_registry()
        return _registry


def reset_registry() -> None:
    """Forget loaded plugins (tests install plugins at run time)."""
    global _registry
    with _lock:
        _registry = None


def installed_backends() -> list[str]:
    return sorted(registry().provisioners)


def resolve_backend(
    name: str, source: str = "backend=", fix: str = "pass one of them as backend=, or set BURLA_BACKEND"
) -> tuple[ProvisionerRecord, TransportRecord, SchedulerRecord]:
    """The records of backend `name`; an unknown one fails saying where the name came from
    (`source`, e.g. "BURLA_BACKEND") and how to change it (`fix`), see config.backend_choice."""
    reg = registry()
    if name not in reg.provisioners:
        raise UnknownBackend(
            f"unknown backend {name!r} (from {source}); installed backends: "
            f"{', '.join(sorted(reg.provisioners))}; {fix}"
        )
    provisioner = reg.provisioners[name]
    if provisioner.transport not in reg.transports:
        raise PluginError(
            f"backend {name!r} needs transport {provisioner.transport!r}, which no installed plugin "
            f"registers (installed transports: {', '.join(sorted(reg.transports)) or 'none'})"
        )
    if provisioner.scheduler not in reg.schedulers:
        raise PluginError(
            f"backend {name!r} needs scheduler {provisioner.scheduler!r}, which no installed plugin "
            f"registers (installed schedulers: {', '.join(sorted(reg.schedulers)) or 'none'})"
        )
    return provisioner, reg.transports[provisioner.transport], reg.schedulers[provisioner.scheduler]


def test_environment(name: str) -> TestEnvironmentRecord | None:
    """The test environment a backend registers, or None (the suite then uses the backend as
    the user configured it)."""
    resolve_backend(name)
    return registry().test_environments.get(name)
