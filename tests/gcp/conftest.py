"""Fixtures for the GCP stand-in's tests: one stand-in per test session, the owner's
credentials, and helpers that drive VMs through the real Compute client."""

from __future__ import annotations

import socket
import sys
import time
import urllib.request
from pathlib import Path

import pytest

pytest.importorskip("google.cloud.compute_v1", reason="the gcp extra is not installed (pip install -e '.[test]')")

from burla_backend_gcp import clients  # noqa: E402
from burla_backend_gcp.standin import StandIn  # noqa: E402

HERE = Path(__file__).parent
SAMPLE_STARTUP = HERE / "sample_startup.sh"
HELLO_IMAGE = "us-docker.pkg.dev/burla-test/hello/hello:*"
ZONE = "us-central1-a"


@pytest.fixture(scope="package")
def standin():
    with StandIn(run_images={HELLO_IMAGE: [sys.executable, str(HERE / "hello_service.py")]},
                 stop_grace_s=1.0, preempt_grace_s=0.5) as running:
        yield running


@pytest.fixture(scope="package")
def owner(standin):
    return standin.credentials()


@pytest.fixture(scope="package")
def project(standin):
    return standin.project_id


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until(predicate, timeout_s: float = 30.0, what: str = "condition"):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")


def http_get(url: str, timeout_s: float = 2.0) -> bytes | None:
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:
            return response.read()
    except OSError:
        return None


def vm_instance(name: str, *, machine_type: str = "n1-standard-2", zone: str = ZONE, script: str | None = None,
                attributes: dict[str, str] | None = None, spot: bool = False, gpu: bool = False,
                image: str = "projects/debian-cloud/global/images/family/debian-12"):
    """An Instance as the backend will build one (boot disk, external NAT, scheduling)."""
    from google.cloud import compute_v1

    items = [compute_v1.Items(key=k, value=v) for k, v in (attributes or {}).items()]
    if script is not None:
        items.append(compute_v1.Items(key="startup-script", value=script))
    scheduling = compute_v1.Scheduling(
        provisioning_model="SPOT" if spot else "STANDARD",
        on_host_maintenance="TERMINATE" if gpu or spot else "MIGRATE", automatic_restart=False)
    if spot:
        scheduling.instance_termination_action = "DELETE"
    return compute_v1.Instance(
        name=name, machine_type=f"zones/{zone}/machineTypes/{machine_type}",
        disks=[compute_v1.AttachedDisk(boot=True, auto_delete=True, initialize_params=compute_v1.AttachedDiskInitializeParams(
            source_image=image, disk_size_gb=50))],
        network_interfaces=[compute_v1.NetworkInterface(access_configs=[
            compute_v1.AccessConfig(name="External NAT", type_="ONE_TO_ONE_NAT")])],
        metadata=compute_v1.Metadata(items=items), scheduling=scheduling, tags=compute_v1.Tags(items=["burla-node"]),
        service_accounts=[compute_v1.ServiceAccount(email="default",
                                                    scopes=["https://www.googleapis.com/auth/cloud-platform"])],
    )


@pytest.fixture
def compute(standin, owner, project):
    """Create VMs through the real InstancesClient; every VM a test made is deleted after it."""
    client = clients.instances(endpoint=standin.url, credentials=owner)
    made: list[tuple[str, str]] = []

    class Compute:
        instances = client

        def create(self, name: str, zone: str = ZONE, **kwargs):
            op = client.insert(project=project, zone=zone, instance_resource=vm_instance(name, zone=zone, **kwargs))
            made.append((zone, name))
            return op

        def wait(self, op, zone: str = ZONE):
            return clients.wait_zone_operation(op, project=project, zone=zone, endpoint=standin.url,
                                               credentials=owner, timeout_s=60)

        def create_and_wait(self, name: str, zone: str = ZONE, **kwargs):
            return self.wait(self.create(name, zone=zone, **kwargs), zone=zone)

        def delete(self, name: str, zone: str = ZONE):
            return self.wait(client.delete(project=project, zone=zone, instance=name), zone=zone)

    yield Compute()
    from google.api_core import exceptions

    for zone, name in made:
        try:
            clients.wait_zone_operation(client.delete(project=project, zone=zone, instance=name), project=project,
                                        zone=zone, endpoint=standin.url, credentials=owner, timeout_s=60)
        except exceptions.NotFound:
            pass
