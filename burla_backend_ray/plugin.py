"""Registers the `ray` backend and its transport through the same hooks a third-party plugin
uses. The factories import on first use: loading the plugins must not import ray."""

from __future__ import annotations

from burla_core.hookspecs import ProvisionerRecord, TestEnvironmentRecord, TransportRecord, hookimpl


def ray_provisioner(options: dict):
    from .provisioner import RayProvisioner

    return RayProvisioner(options)


def ray_transport(options: dict):
    from .transport import RayTransport

    return RayTransport(options)


def ray_test_environment():
    from .testenv import ray_test_environment

    return ray_test_environment()


@hookimpl
def burla_register_provisioners(register) -> None:
    register(
        ProvisionerRecord(
            name="ray",
            factory=ray_provisioner,
            transport="ray",
            description="a Ray cluster you already run (backend_options={'address': ...} or RAY_ADDRESS)",
        )
    )


@hookimpl
def burla_register_transports(register) -> None:
    register(TransportRecord(name="ray", factory=ray_transport))


@hookimpl
def burla_register_test_environments(register) -> None:
    register(TestEnvironmentRecord(backend="ray", factory=ray_test_environment))
