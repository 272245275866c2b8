"""Registers the `dask` backend and its transport through the same hooks a third-party plugin
uses. The factories import on first use: loading the plugins must not import dask."""

from __future__ import annotations

from burla_core.hookspecs import ProvisionerRecord, TestEnvironmentRecord, TransportRecord, hookimpl


def dask_provisioner(options: dict):
    from .provisioner import DaskProvisioner

    return DaskProvisioner(options)


def dask_transport(options: dict):
    from .transport import DaskTransport

    return DaskTransport(options)


def dask_test_environment():
    from .testenv import dask_test_environment

    return dask_test_environment()


@hookimpl
def burla_register_provisioners(register) -> None:
    register(
        ProvisionerRecord(
            name="dask",
            factory=dask_provisioner,
            transport="dask",
            description="a Dask cluster you already run (backend_options={'address': ...} or BURLA_DASK_ADDRESS)",
        )
    )


@hookimpl
def burla_register_transports(register) -> None:
    register(TransportRecord(name="dask", factory=dask_transport))


@hookimpl
def burla_register_test_environments(register) -> None:
    register(TestEnvironmentRecord(backend="dask", factory=dask_test_environment))
