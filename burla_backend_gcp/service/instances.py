"""The VMs of a cluster, as Compute Engine sees them: the Instance a node is made of, and the
calls that create and delete one and read the machine types and zones. Blocking calls, through
the client factory (burla_backend_gcp.clients), as the service's own service account.

A node's Instance: the boot image (a GPU-ready one for a2/a3 machines), a boot disk of `disk_gb`,
an external address (callers reach the agent directly), the network tag the firewall rule
admits, the node service account, `onHostMaintenance=TERMINATE` for GPUs (they cannot live-
migrate) and Spot VMs, and metadata: the startup script (vm/startup.py) and the attributes its
node supervisor (vm/node.py) reads.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

from .. import clients, schema

OPERATION_TIMEOUT_S = 600.0


@dataclass(frozen=True)
class MachineShape:
    """A machine type: its vCPUs, memory and the GPUs it carries."""

    name: str
    cpus: int
    memory_gb: float
    gpus: int


def node_instance(*, name: str, zone: str, machine_type: str, boot_image: str, disk_gb: int, spot: bool, gpus: int,
                  service_account: str, attributes: dict[str, str], startup_script: str) -> Any:
    from google.cloud import compute_v1

    items = [compute_v1.Items(key=key, value=value) for key, value in sorted(attributes.items())]
    items.append(compute_v1.Items(key="startup-script", value=startup_script))
    scheduling = compute_v1.Scheduling(
        provisioning_model="SPOT" if spot else "STANDARD",
        on_host_maintenance="TERMINATE" if gpus or spot else "MIGRATE",
        automatic_restart=False,
    )
    if spot:
        scheduling.instance_termination_action = "DELETE"
    return compute_v1.Instance(
        name=name,
        machine_type=f"zones/{zone}/machineTypes/{machine_type}",
        disks=[compute_v1.AttachedDisk(boot=True, auto_delete=True, initialize_params=compute_v1.AttachedDiskInitializeParams(
            source_image=boot_image, disk_size_gb=disk_gb))],
        network_interfaces=[compute_v1.NetworkInterface(access_configs=[
            compute_v1.AccessConfig(name="External NAT", type_="ONE_TO_ONE_NAT")])],
        metadata=compute_v1.Metadata(items=items),
        scheduling=scheduling,
        tags=compute_v1.Tags(items=[schema.NODE_TAG]),
        labels={schema.NODE_LABEL: "node"},
        service_accounts=[compute_v1.ServiceAccount(email=service_account,
                                                    scopes=["https://www.googleapis.com/auth/cloud-platform"])],
    )


class Compute:
    """The service's Compute Engine clients (built once: the compute client takes a second)."""

    def __init__(self, project: str) -> None:
        self.project = project
        self._lock = threading.Lock()
        self._instances = None
        self._operations = None
        self._machine_types = None
        self._zones: dict[str, list[str]] = {}
        self._shapes: dict[tuple[str, str], list[MachineShape]] = {}

    def _clients(self):
        with self._lock:
            if self._instances is None:
                self._instances = clients.instances()
                self._operations = clients.zone_operations()
                self._machine_types = clients.machine_types()
            return self._instances, self._operations, self._machine_types

    def warm(self) -> None:
        """Build the clients now (a failure is logged, and retried when they are needed)."""
        try:
            self._clients()
        except Exception:
            import logging

            logging.getLogger("burla.cluster").warning("preparing the Compute Engine clients failed", exc_info=True)

    def create(self, zone: str, instance: Any) -> None:
        """Create the VM and wait for its operation; GcpOperationFailed carries GCE's reasons."""
        instances, operations, _ = self._clients()
        operation = instances.insert(project=self.project, zone=zone, instance_resource=instance)
        clients.wait_zone_operation(operation, project=self.project, zone=zone, client=operations,
                                    timeout_s=OPERATION_TIMEOUT_S)

    def delete(self, zone: str, name: str, wait: bool = True) -> bool:
        """Delete the VM; False when it was already gone."""
        from google.api_core import exceptions

        instances, operations, _ = self._clients()
        try:
            operation = instances.delete(project=self.project, zone=zone, instance=name)
        except exceptions.NotFound:
            return False
        if wait:
            clients.wait_zone_operation(operation, project=self.project, zone=zone, client=operations,
                                        timeout_s=OPERATION_TIMEOUT_S)
        return True

    def serial_tail(self, zone: str, name: str, characters: int = 600) -> str:
        """The end of a VM's serial console ("" when it cannot be read)."""
        from google.api_core import exceptions

        instances, _, _ = self._clients()
        try:
            output = instances.get_serial_port_output(project=self.project, zone=zone, instance=name)
        except exceptions.GoogleAPICallError:
            return ""
        return output.contents[-characters:]

    def zones(self, region: str) -> list[str]:
        """The zones of `region`, in name order."""
        with self._lock:
            if region in self._zones:
                return self._zones[region]
        zones_client = clients.zones()
        found = sorted(zone.name for zone in zones_client.list(request={"project": self.project, "filter": f'name eq "{region}-.*"'}))
        with self._lock:
            self._zones[region] = found
        return found

    def family(self, zone: str, prefix: str) -> list[MachineShape]:
        """The machine types of a family ("n2-standard", "a2-highgpu") in `zone`, smallest first."""
        key = (zone, prefix)
        with self._lock:
            if key in self._shapes:
                return self._shapes[key]
        _, _, machine_types = self._clients()
        shapes = []
        for machine in machine_types.list(request={"project": self.project, "zone": zone,
                                                   "filter": f'name eq "{prefix}-[0-9]+g?"'}):
            gpus = sum(accelerator.guest_accelerator_count for accelerator in machine.accelerators)
            shapes.append(MachineShape(machine.name, machine.guest_cpus, machine.memory_mb / 1024, gpus))
        shapes.sort(key=lambda shape: (shape.cpus, shape.memory_gb))
        with self._lock:
            self._shapes[key] = shapes
        return shapes
