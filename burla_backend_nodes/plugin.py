"""Registers the `nodes` backend and its transport through the same hooks a third-party plugin
uses."""

from __future__ import annotations

from burla_core.hookspecs import ProvisionerRecord, TestEnvironmentRecord, TransportRecord, hookimpl

# The factories import on first use: loading the plugins must not import aiohttp, or every call
# on the local backend would pay for it.


def nodes_provisioner(options: dict):
    from .provisioner import NodesProvisioner

    return NodesProvisioner(options)


def nodes_transport(options: dict):
    from burla_core.node.transport import HttpTransport

    from .settings import NodesSettings

    return HttpTransport(NodesSettings.from_options(options).http)


def nodes_test_environment():
    from .testenv import nodes_test_environment

    return nodes_test_environment()


@hookimpl
def burla_register_provisioners(register) -> None:
    register(
        ProvisionerRecord(
            name="nodes",
            factory=nodes_provisioner,
            transport="nodes-http",
            description="machines you already have, each running `burla node start` (BURLA_NODES, BURLA_NODE_TOKEN)",
        )
    )


@hookimpl
def burla_register_transports(register) -> None:
    register(TransportRecord(name="nodes-http", factory=nodes_transport))


@hookimpl
def burla_register_test_environments(register) -> None:
    register(TestEnvironmentRecord(backend="nodes", factory=nodes_test_environment))
