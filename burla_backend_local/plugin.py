"""Registers the `local` backend through the same hooks a third-party plugin uses."""

from __future__ import annotations

from burla_core.hookspecs import ProvisionerRecord, TransportRecord, hookimpl


@hookimpl
def burla_register_provisioners(register) -> None:
    from .provisioner import LocalProvisioner

    register(
        ProvisionerRecord(
            name="local",
            factory=LocalProvisioner,
            transport="local",
            description="this machine: one node, worker processes, no account needed",
        )
    )


@hookimpl
def burla_register_transports(register) -> None:
    from .transport import LocalTransport

    register(TransportRecord(name="local", factory=LocalTransport))
