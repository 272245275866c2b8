"""Registers the `nodes` backend and the `http` transport through the same hooks a third-party
plugin uses."""

from __future__ import annotations

from burla_core.hookspecs import ProvisionerRecord, TransportRecord, hookimpl


# Both factories import on first use: loading the plugins must not import aiohttp, or every call
# on the local backend would pay for it.


def nodes_provisioner(options: dict):
    from .provisioner import NodesProvisioner

    return NodesProvisioner(options)


@hookimpl
def burla_register_provisioners(register) -> None:
    register(
        ProvisionerRecord(
            name="nodes",
            factory=nodes_provisioner,
            transport="http",
            description="machines you already have, each running `burla node start` (BURLA_NODES, BURLA_NODE_TOKEN)",
        )
    )


@hookimpl
def burla_register_transports(register) -> None:
    def http_transport(options: dict):
        from burla_core.node.client import HttpTransport

        return HttpTransport(options)

    register(TransportRecord(name="http", factory=http_transport))
