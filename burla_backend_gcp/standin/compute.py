"""Compute Engine in the stand-in: instances, zone operations, and the
faults a test can cause (quota, stockout, a failed boot, preemption, a cut network).

An insert is checked as GCE checks it (the name, the machine type in the request's zone, a boot
disk with an image, GPUs only with `onHostMaintenance=TERMINATE`, the service account exists and
the caller may act as it), then answered with a RUNNING zone operation. Quota is checked at once,
under the lock, against the region's CPUs already used, so parallel inserts cannot overshoot it;
like GCE, going over it is not an HTTP error but an operation that ends with `QUOTA_EXCEEDED`.
An accepted instance becomes a `SimulatedVm` (vms.py). Addresses: every VM's internal and
external IP is 127.0.0.1 (its services listen on ports of this machine).
"""

from __future__ import annotations

import fnmatch
import random
import re
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from google.cloud import compute_v1
from google.cloud.compute_v1.services.instances.transports.rest_base import _BaseInstancesRestTransport as _I
from google.cloud.compute_v1.services.zone_operations.transports.rest_base import _BaseZoneOperationsRestTransport as _Z

from .filters import matches_filter, page
from .machines import ACCELERATORS, MACHINE_TYPES, known_zone, region_of
from .metadata import MetadataIdentity
from .operations import ComputeOperations, now_rfc3339
from .rest import Call, Route, already_exists, invalid, make_route, not_found, rule_of
from .vms import SimulatedVm, VmSpec

if TYPE_CHECKING:
    from . import StandIn

SERVICE = "compute.googleapis.com"
LINK = "https://www.googleapis.com/compute/v1"
_NAME = re.compile(r"^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$")


@dataclass
class ComputeFaults:
    """What a test has set: quotas, zones out of stock, VMs whose guest will not boot."""

    cpu_quota: dict[tuple[str, str], int] = field(default_factory=dict)  # (region, family or "") → CPUs
    stockouts: set[str] = field(default_factory=set)  # zones
    boot_failures: dict[str, str] = field(default_factory=dict)  # name pattern → why


@dataclass
class InstanceRecord:
    instance: compute_v1.Instance
    vm: SimulatedVm
    region: str
    family: str
    cpus: int
    boot_delay_s: float = 0.0


class ComputeApi:
    def __init__(self, standin: "StandIn"):
        self.standin = standin
        self.project = standin.project_id
        self.operations = ComputeOperations(standin.project_id, lambda: LINK)
        self.faults = ComputeFaults()
        self._lock = threading.Lock()
        self._instances: dict[tuple[str, str], InstanceRecord] = {}

    # ------------------------------------------------------------ routes

    def routes(self) -> list[Route]:
        def r(base, request_type, handler, name: str) -> Route:
            return make_route(rule_of(base), request_type, handler, service=SERVICE, name=name)

        c = compute_v1
        return [
            r(_I._BaseInsert, c.InsertInstanceRequest, self.insert, "compute.instances.insert"),
            r(_I._BaseGet, c.GetInstanceRequest, self.get, "compute.instances.get"),
            r(_I._BaseList, c.ListInstancesRequest, self.list, "compute.instances.list"),
            r(_I._BaseAggregatedList, c.AggregatedListInstancesRequest, self.aggregated_list,
              "compute.instances.aggregatedList"),
            r(_I._BaseDelete, c.DeleteInstanceRequest, self.delete, "compute.instances.delete"),
            r(_I._BaseGetSerialPortOutput, c.GetSerialPortOutputInstanceRequest, self.serial_port_output,
              "compute.instances.getSerialPortOutput"),
            r(_Z._BaseGet, c.GetZoneOperationRequest, self.get_operation, "compute.zoneOperations.get"),
            r(_Z._BaseWait, c.WaitZoneOperationRequest, self.wait_operation, "compute.zoneOperations.wait"),
            r(_Z._BaseList, c.ListZoneOperationsRequest, self.list_operations, "compute.zoneOperations.list"),
            r(_Z._BaseDelete, c.DeleteZoneOperationRequest, self.delete_operation, "compute.zoneOperations.delete"),
        ]

    # ------------------------------------------------------------ checks

    def _project(self, call: Call, project: str, permission: str, resource: str = "") -> None:
        self.standin.check_project(project)
        self.standin.iam.require(call.member, permission, resource or f"projects/{project}")

    def _zone(self, zone: str) -> None:
        if not known_zone(zone):
            raise not_found(f"projects/{self.project}/zones/{zone}")

    def _record(self, zone: str, name: str) -> InstanceRecord:
        with self._lock:
            record = self._instances.get((zone, name))
        if record is None:
            raise not_found(f"projects/{self.project}/zones/{zone}/instances/{name}")
        return record

    def _machine_type(self, value: str, zone: str):
        match = re.search(r"(?:^|/)zones/([^/]+)/machineTypes/([^/]+)$", value)
        if not match:
            raise invalid(f"Invalid value for field 'resource.machineType': '{value}'. "
                          f"Expected zones/ZONE/machineTypes/TYPE.")
        if match.group(1) != zone:
            raise invalid(f"Invalid value for field 'resource.machineType': '{value}'. "
                          f"Cross-zone references are not allowed.")
        machine = MACHINE_TYPES.get(match.group(2))
        if machine is None:
            raise invalid(f"Invalid value for field 'resource.machineType': '{value}'. Machine type with "
                          f"name '{match.group(2)}' does not exist in zone '{zone}'.")
        return machine

    def _spec(self, call: Call, project: str, zone: str, instance: compute_v1.Instance) -> VmSpec:
        if not _NAME.match(instance.name):
            raise invalid(f"Invalid value for field 'resource.name': '{instance.name}'. Must be a match of "
                          f"regex '(?:[a-z](?:[-a-z0-9]{{0,61}}[a-z0-9])?|[1-9][0-9]{{0,19}})'")
        machine = self._machine_type(instance.machine_type, zone)
        boot = [d for d in instance.disks if d.boot] or list(instance.disks[:1])
        image = boot[0].initialize_params.source_image if boot else ""
        if not image:
            raise invalid("Invalid value for field 'resource.disks': ''. "
                          "Boot disk must be specified with initializeParams.sourceImage.")
        accelerators = [(machine.accelerator, machine.gpus)] if machine.gpus else []
        for accelerator in instance.guest_accelerators:
            kind = accelerator.accelerator_type.rsplit("/acceleratorTypes/", 1)[-1]
            if "acceleratorTypes/" not in accelerator.accelerator_type or kind not in ACCELERATORS:
                raise invalid(f"Invalid value for field 'resource.guestAccelerators[0].acceleratorType': "
                              f"'{accelerator.accelerator_type}'. Accelerator type not found.")
            accelerators.append((kind, accelerator.accelerator_count or 1))
        scheduling = instance.scheduling
        if accelerators and scheduling.on_host_maintenance != "TERMINATE":
            raise invalid("Instances with guest accelerators do not support live migration. "
                          "Set scheduling.onHostMaintenance to TERMINATE.")
        account = "default"
        if instance.service_accounts:
            account = instance.service_accounts[0].email or "default"
        if account == "default":
            account = self.standin.default_compute_account
        self.standin.iam_admin.require_account(account)
        self.standin.iam.require(call.member, "iam.serviceAccounts.actAs",
                                 f"projects/{project}/serviceAccounts/{account}")
        attributes = {item.key: item.value for item in instance.metadata.items}
        action = scheduling.instance_termination_action or "STOP"  # GCE's default, Spot VMs included
        return VmSpec(instance.name, zone, machine.name, machine.cpus, machine.memory_mb, image,
                      accelerators, account, attributes, action)

    def _quota_error(self, region: str, family: str, cpus: int) -> compute_v1.Errors | None:
        """The QUOTA_EXCEEDED error if `cpus` more in `region` go over a quota (lock held)."""
        used = {"": 0, family: 0}
        for record in self._instances.values():
            if record.region == region and record.instance.status != "TERMINATED":
                used[""] += record.cpus
                if record.family == family:
                    used[family] += record.cpus
        for key in ("", family):
            limit = self.faults.cpu_quota.get((region, key))
            if limit is not None and used[key] + cpus > limit:
                metric = f"{key.upper()}_CPUS" if key else "CPUS"
                limit_name = f"{key.upper()}-CPUS-per-project-region" if key else "CPUS-per-project-region"
                return compute_v1.Errors(
                    code="QUOTA_EXCEEDED",
                    message=f"Quota '{metric}' exceeded.  Limit: {float(limit)} in region {region}.",
                    error_details=[compute_v1.ErrorDetails(quota_info=compute_v1.QuotaExceededInfo(
                        metric_name=f"compute.googleapis.com/{metric.lower()}", limit_name=limit_name,
                        dimensions={"region": region}, limit=float(limit)))],
                )
        return None

    # ------------------------------------------------------------ instances

    def insert(self, call: Call, request: compute_v1.InsertInstanceRequest) -> compute_v1.Operation:
        project, zone, instance = request.project, request.zone, request.instance_resource
        self._project(call, project, "compute.instances.create")
        self._zone(zone)
        if instance.metadata.items:
            self.standin.iam.require(call.member, "compute.instances.setMetadata", f"projects/{project}")
        spec = self._spec(call, project, zone, instance)
        target = f"zones/{zone}/instances/{instance.name}"
        op = self.operations.start(f"zones/{zone}", "insert", target, user=_email(call.member))
        region, family = region_of(zone), spec.machine_type.split("-", 1)[0]
        with self._lock:
            if (zone, instance.name) in self._instances:
                self.operations.delete(f"zones/{zone}", op.name)
                raise already_exists(f"projects/{project}/{target}")
            quota = self._quota_error(region, family, spec.cpus)
            if quota is None and zone not in self.faults.stockouts:
                record = self._new_record(project, zone, instance, spec, region, family)
                # VMs asked for while others still boot come up later, one after another
                booting = sum(1 for other in self._instances.values() if other.vm.script_started_at == 0.0
                              and not other.vm.stopped.is_set())
                record.boot_delay_s = self.standin.config.boot_delay_s + booting * self.standin.config.boot_stagger_s
                self._instances[(zone, instance.name)] = record
        if quota is not None:
            self.operations.finish(f"zones/{zone}", op.name, errors=[quota], http_status=403,
                                   http_message="FORBIDDEN")
        elif zone in self.faults.stockouts:
            self.operations.finish(f"zones/{zone}", op.name, http_status=503, http_message="SERVICE UNAVAILABLE",
                                   errors=[compute_v1.Errors(
                                       code="ZONE_RESOURCE_POOL_EXHAUSTED",
                                       message=f"The zone 'projects/{project}/zones/{zone}' does not have enough "
                                               f"resources available to fulfill the request.  Try a different "
                                               f"zone, or try again later.")])
        else:
            threading.Thread(target=self._bring_up, args=(record, op.name), name=f"vm-{instance.name}",
                             daemon=True).start()
        return op

    def _new_record(self, project: str, zone: str, request: compute_v1.Instance, spec: VmSpec,
                    region: str, family: str) -> InstanceRecord:
        instance = compute_v1.Instance(request)
        instance_id = random.getrandbits(63)
        base = f"{LINK}/projects/{project}/zones/{zone}"
        instance.id = instance_id
        instance.kind = "compute#instance"
        instance.zone = base
        instance.machine_type = f"{base}/machineTypes/{spec.machine_type}"
        instance.self_link = f"{base}/instances/{spec.name}"
        instance.status = "PROVISIONING"
        instance.creation_timestamp = now_rfc3339()
        instance.cpu_platform = "Intel Cascade Lake"
        instance.fingerprint = "standin="
        instance.metadata.fingerprint = "standin="
        instance.metadata.kind = "compute#metadata"
        if not instance.service_accounts:
            instance.service_accounts = [compute_v1.ServiceAccount(email=spec.service_account)]
        instance.service_accounts[0].email = spec.service_account
        for index, interface in enumerate(instance.network_interfaces or [compute_v1.NetworkInterface()]):
            interface.name = interface.name or f"nic{index}"
            interface.network_i_p = "127.0.0.1"
            interface.network = interface.network or f"{LINK}/projects/{project}/global/networks/default"
            for access in interface.access_configs:
                access.nat_i_p = "127.0.0.1"
                access.kind = "compute#accessConfig"
            if not instance.network_interfaces:
                instance.network_interfaces = [interface]
        for index, disk in enumerate(instance.disks):
            # initializeParams is input only: GCE answers the disk it made, not how it was made.
            disk.disk_size_gb = disk.initialize_params.disk_size_gb or 10
            disk.device_name = disk.device_name or (spec.name if index == 0 else f"persistent-disk-{index}")
            disk.source = f"{base}/disks/{spec.name}" + (f"-{index}" if index else "")
            disk.index = index
            disk.kind = "compute#attachedDisk"
            disk.type_ = disk.type_ or "PERSISTENT"
            disk.mode = disk.mode or "READ_WRITE"
            disk.interface = disk.interface or "SCSI"
            disk.initialize_params = None
        scheduling = instance.scheduling
        scheduling.provisioning_model = scheduling.provisioning_model or "STANDARD"
        scheduling.on_host_maintenance = scheduling.on_host_maintenance or "MIGRATE"
        if "automatic_restart" not in scheduling:
            scheduling.automatic_restart = scheduling.provisioning_model != "SPOT"
        if "preemptible" not in scheduling:
            scheduling.preemptible = False
        if scheduling.provisioning_model == "SPOT" and not scheduling.instance_termination_action:
            scheduling.instance_termination_action = "STOP"
        for accelerator in instance.guest_accelerators:
            kind = accelerator.accelerator_type.rsplit("/", 1)[-1]
            accelerator.accelerator_type = f"{LINK}/projects/{project}/zones/{zone}/acceleratorTypes/{kind}"
        directory = Path(self.standin.root) / "vms" / f"{spec.name}-{instance_id:x}"
        directory.mkdir(parents=True)
        identity = MetadataIdentity(
            project_id=project, project_number=self.standin.project_number, service_account=spec.service_account,
            instance_id=instance_id, name=spec.name, zone=zone, machine_type=spec.machine_type, image=spec.image,
            attributes=spec.attributes,
        )
        vm = SimulatedVm(spec, directory, identity)
        vm.console(f"stand-in: instance {spec.name} created in {zone}")  # the serial log exists from now on
        for pattern, why in self.faults.boot_failures.items():
            if fnmatch.fnmatchcase(spec.name, pattern):
                vm.boot_failure = why
        return InstanceRecord(instance, vm, region, family, spec.cpus)

    def _set_status(self, record: InstanceRecord, status: str) -> None:
        with self._lock:
            record.instance.status = status
            if status == "RUNNING":
                record.instance.last_start_timestamp = now_rfc3339()

    def _bring_up(self, record: InstanceRecord, operation: str) -> None:
        config = self.standin.config
        zone = record.vm.spec.zone
        try:
            self._set_status(record, "STAGING")
            if record.vm.stopped.wait(config.provision_delay_s):
                return
            self._set_status(record, "RUNNING")
            record.vm.running_at = time.monotonic()
        finally:
            self.operations.finish(f"zones/{zone}", operation)
        metadata = self.standin.metadata_server(record.vm.identity)
        record.vm.boot(self.standin.processes, metadata, delay_s=record.boot_delay_s,
                       extra_env=self.standin.child_environment())

    def get(self, call: Call, request: compute_v1.GetInstanceRequest) -> compute_v1.Instance:
        self._project(call, request.project, "compute.instances.get")
        record = self._record(request.zone, request.instance)
        with self._lock:
            return compute_v1.Instance(record.instance)

    def _listed(self, zone: str | None) -> list[compute_v1.Instance]:
        with self._lock:
            return [compute_v1.Instance(r.instance) for (z, _), r in sorted(self._instances.items())
                    if zone is None or z == zone]

    def list(self, call: Call, request: compute_v1.ListInstancesRequest) -> compute_v1.InstanceList:
        self._project(call, request.project, "compute.instances.list")
        self._zone(request.zone)
        items = [i for i in self._listed(request.zone) if matches_filter(i, request.filter)]
        chosen, token = page(items, request.max_results, request.page_token)
        return compute_v1.InstanceList(items=chosen, next_page_token=token, kind="compute#instanceList",
                                       id=f"projects/{request.project}/zones/{request.zone}/instances")

    def aggregated_list(self, call: Call, request) -> compute_v1.InstanceAggregatedList:
        self._project(call, request.project, "compute.instances.list")
        scoped: dict[str, compute_v1.InstancesScopedList] = {}
        for instance in self._listed(None):
            if matches_filter(instance, request.filter):
                zone = instance.zone.rsplit("/", 1)[-1]
                scoped.setdefault(f"zones/{zone}", compute_v1.InstancesScopedList()).instances.append(instance)
        return compute_v1.InstanceAggregatedList(items=scoped, kind="compute#instanceAggregatedList",
                                                 id=f"projects/{request.project}/aggregated/instances")

    def delete(self, call: Call, request: compute_v1.DeleteInstanceRequest) -> compute_v1.Operation:
        self._project(call, request.project, "compute.instances.delete")
        record = self._record(request.zone, request.instance)
        op = self.operations.start(f"zones/{request.zone}", "delete",
                                   f"zones/{request.zone}/instances/{request.instance}", user=_email(call.member))
        self._set_status(record, "STOPPING")
        threading.Thread(target=self._tear_down, args=(record, op.name), daemon=True).start()
        return op

    def _tear_down(self, record: InstanceRecord, operation: str | None) -> None:
        zone = record.vm.spec.zone
        try:
            record.vm.halt(self.standin.processes, grace_s=self.standin.config.stop_grace_s)
        finally:
            with self._lock:
                if self._instances.get((zone, record.vm.spec.name)) is record:
                    del self._instances[(zone, record.vm.spec.name)]
            if operation:
                self.operations.finish(f"zones/{zone}", operation)

    def serial_port_output(self, call: Call, request) -> compute_v1.SerialPortOutput:
        self._project(call, request.project, "compute.instances.getSerialPortOutput")
        record = self._record(request.zone, request.instance)
        data = record.vm.serial_log.read_text(errors="replace") if record.vm.serial_log.exists() else ""
        start = min(max(request.start, 0), len(data))
        return compute_v1.SerialPortOutput(contents=data[start:], start=start, next_=len(data),
                                           kind="compute#serialPortOutput")

    # ------------------------------------------------------------ zone operations

    def get_operation(self, call: Call, request) -> compute_v1.Operation:
        self._project(call, request.project, "compute.zoneOperations.get")
        return self.operations.get(f"zones/{request.zone}", request.operation)

    def wait_operation(self, call: Call, request) -> compute_v1.Operation:
        self._project(call, request.project, "compute.zoneOperations.get")
        return self.operations.wait(f"zones/{request.zone}", request.operation)

    def list_operations(self, call: Call, request) -> compute_v1.OperationList:
        self._project(call, request.project, "compute.zoneOperations.list")
        items = [o for o in self.operations.list(f"zones/{request.zone}") if matches_filter(o, request.filter)]
        chosen, token = page(items, request.max_results, request.page_token)
        return compute_v1.OperationList(items=chosen, next_page_token=token, kind="compute#operationList")

    def delete_operation(self, call: Call, request) -> compute_v1.DeleteZoneOperationResponse:
        self._project(call, request.project, "compute.zoneOperations.delete")
        self.operations.delete(f"zones/{request.zone}", request.operation)
        return compute_v1.DeleteZoneOperationResponse()

    # ------------------------------------------------------------ faults

    def find(self, name: str) -> InstanceRecord:
        with self._lock:
            found = [r for (_, n), r in self._instances.items() if n == name]
        if not found:
            raise KeyError(f"no simulated VM named {name!r}")
        return found[0]

    def wait_for_script(self, name: str, timeout_s: float = 30.0) -> SimulatedVm:
        """Block until the VM's startup script has started (for tests); KeyError/TimeoutError."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            vm = self.find(name).vm
            if vm.process is not None:
                return vm
            time.sleep(0.02)
        raise TimeoutError(f"the startup script of {name!r} did not start within {timeout_s} s")

    def preempt(self, name: str) -> None:
        """Preempt a VM as GCE does: preempted=TRUE in its metadata, its shutdown-script, then
        power off; TERMINATED, or deleted for instanceTerminationAction=DELETE."""
        record = self.find(name)
        vm, config = record.vm, self.standin.config
        vm.identity.set_preempted()
        vm.console("stand-in: the instance was preempted")
        vm.run_shutdown_script(self.standin.processes, self.standin.child_environment(), config.preempt_grace_s)
        vm.halt(self.standin.processes, grace_s=config.stop_grace_s)
        scope = f"zones/{vm.spec.zone}"
        target = f"zones/{vm.spec.zone}/instances/{name}"
        self.operations.record_done(scope, "compute.instances.preempted", target, user="system")
        if vm.spec.termination_action == "DELETE":
            self._tear_down(record, None)
            self.operations.record_done(scope, "delete", target, user="system")
        else:
            self._set_status(record, "TERMINATED")

    def cut_network(self, name: str) -> None:
        self.find(name).vm.freeze(self.standin.processes)

    def restore_network(self, name: str) -> None:
        self.find(name).vm.thaw(self.standin.processes)

    def close(self) -> None:
        with self._lock:
            records = list(self._instances.values())
        for record in records:
            record.vm.halt(self.standin.processes, grace_s=0.5)



def _email(member: str) -> str:
    return member.split(":", 1)[-1]
