"""Registers backend "gcp", its transport and its test environment through the same hooks a
third-party plugin uses. The factories import on first use: loading the plugins imports nothing
of the backend (and nothing Google's)."""

from __future__ import annotations

from burla_core.hookspecs import ProvisionerRecord, TestEnvironmentRecord, TransportRecord, hookimpl


def gcp_provisioner(options: dict):
    from .provisioner import GcpProvisioner

    return GcpProvisioner(options)


def gcp_transport(options: dict):
    from .transport import GcpTransport

    return GcpTransport(options)


def gcp_test_environment():
    from .testenv import gcp_test_environment

    return gcp_test_environment()


@hookimpl
def burla_register_provisioners(register) -> None:
    register(
        ProvisionerRecord(
            name="gcp",
            factory=gcp_provisioner,
            transport="gcp-http",
            description="a cluster in your own Google Cloud project (`burla install`, then `burla login`)",
        )
    )


@hookimpl
def burla_register_transports(register) -> None:
    register(TransportRecord(name="gcp-http", factory=gcp_transport))


@hookimpl
def burla_register_test_environments(register) -> None:
    register(TestEnvironmentRecord(backend="gcp", factory=gcp_test_environment))
