"""Booting and deleting the cluster's VMs: what `grow=True` boots, and the standing nodes.

    grow(job, call, wanted_slots)
      ├─ plan: the machine family (the config's machine type, or the a2/a3 type of func_gpu),
      │        its sizes in the zone; the fewest VMs that give the missing slots, within the
      │        cluster's CPU cap (ClusterConfig.cpu_quota) less what its live VMs use
      ├─ a BOOTING node document per VM, at once (the caller sees them booting)
      └─ one thread per VM: insert + wait_zone_operation (never `.result()`), the next zone of
         the region when a zone is out of stock; QUOTA_EXCEEDED or any other failure ─► the
         node FAILED with GCE's reason (the caller's growth_ended reports it)

The VM then runs its startup script (vm/startup.py) and its node supervisor writes READY. A VM
the service gives up on (a failed boot, missing heartbeats) is marked FAILED and deleted here.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from burla_core import __version__
from burla_core.gpus import GCP_MACHINE_TYPES
from burla_core.node.protocol import python_feature_version

from .. import schema
from ..errors import GcpOperationFailed
from ..fit import RAM_SHARE, Call
from ..vm.attributes import NodeAttributes
from ..vm.startup import StartupConfig, startup_script
from .instances import Compute, MachineShape, node_instance

log = logging.getLogger("burla.cluster")


@dataclass(frozen=True)
class Planned:
    machine: MachineShape
    slots: int


def machine_slots(machine: MachineShape, call: Call) -> int:
    """The calls of `call` one VM of this machine type runs at once (as its agent will count)."""
    r = call.resources
    slots = min(machine.cpus // r.func_cpu, int(round(machine.memory_gb * RAM_SHARE, 2) // r.func_ram))
    if r.func_gpu is not None:
        slots = min(slots, machine.gpus)
    return max(0, slots)


def pack(shapes: list[MachineShape], call: Call, wanted_slots: int, cpu_budget: int) -> tuple[list[Planned], str | None]:
    """The fewest VMs of these machine types that give `wanted_slots`, within `cpu_budget` vCPUs;
    and, when they fall short, why."""
    usable = [(shape, machine_slots(shape, call)) for shape in shapes]
    usable = [(shape, slots) for shape, slots in usable if slots > 0]
    if not usable:
        names = ", ".join(shape.name for shape in shapes) or "none"
        return [], f"no machine type of the family ({names}) fits one call of {call.resources.describe()}"
    planned: list[Planned] = []
    left, budget = wanted_slots, cpu_budget
    while left > 0:
        affordable = [(shape, slots) for shape, slots in usable if shape.cpus <= budget]
        if not affordable:
            smallest = min(usable, key=lambda pair: pair[0].cpus)[0]
            return planned, (f"the cluster's CPU cap (cpu_quota in its config) leaves {budget} vCPUs, too few for "
                             f"another {smallest.name} ({smallest.cpus} vCPUs)")
        covering = [(shape, slots) for shape, slots in affordable if slots >= left]
        shape, slots = min(covering, key=lambda pair: pair[0].cpus) if covering else max(affordable, key=lambda pair: pair[1])
        planned.append(Planned(shape, slots))
        left -= slots
        budget -= shape.cpus
    return planned, None


class Grower:
    def __init__(self, settings, store, compute: Compute | None = None) -> None:
        self.settings = settings
        self.store = store
        self.compute = compute or Compute(settings.project)
        self.pool = ThreadPoolExecutor(max_workers=32, thread_name_prefix="burla-vm")
        self._lock = threading.Lock()  # plans one grow at a time: the CPU cap holds across jobs

    def close(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)

    # --- what to boot --------------------------------------------------------------------------

    def image_for(self, call: Call, config: schema.ClusterConfig) -> str:
        return call.resources.image or config.container_image or f"python:{python_feature_version(call.python)}"

    def family_for(self, call: Call, config: schema.ClusterConfig) -> str:
        """"n2-standard" (the config's machine type's family), or the GPU's: "a2-highgpu"."""
        machine = GCP_MACHINE_TYPES[call.resources.func_gpu] if call.resources.func_gpu else config.machine_type
        return machine.rsplit("-", 1)[0]

    def zones_for(self, call: Call, config: schema.ClusterConfig) -> list[str]:
        region = call.resources.region or config.region
        if config.zones and region == config.region:
            return list(config.zones)
        return self.compute.zones(region)

    def live_cpus(self) -> int:
        return sum(int(node.get("cpus") or 0) for node in self.store.nodes(schema.LIVE_STATUSES))

    # --- booting -------------------------------------------------------------------------------

    def grow(self, job_id: str | None, call: Call, wanted_slots: int, idle_timeout_s: float | None = None,
             service_url: str = "") -> dict:
        """Boot VMs for `wanted_slots` more slots of `call`. Returns at once:
        {"booting": [{"node_id", "machine_type", "slots"}], "failures": [reasons]}. `service_url`:
        where the VMs tell this service that their node document changed ("": they do not)."""
        config = self.store.config(fresh=True)
        zones = self.zones_for(call, config)
        if not zones:
            return {"booting": [], "failures": [f"region {call.resources.region or config.region!r} has no zones"]}
        with self._lock:
            shapes = self.compute.family(zones[0], self.family_for(call, config))
            budget = config.cpu_quota - self.live_cpus()
            planned, shortfall = pack(shapes, call, wanted_slots, budget)
            booting = self._start_boots(job_id, call, config, planned, zones, idle_timeout_s, service_url)
        return {"booting": booting, "failures": [shortfall] if shortfall else []}

    def boot_standing(self, count: int, image: str, service_url: str = "") -> dict:
        """Boot `count` nodes of the config's machine type running `image`: the cluster's own
        nodes, deleted after the config's idle_timeout_s."""
        config = self.store.config(fresh=True)
        call = Call.from_wire({"image": image, "python": "3", "burla": __version__})
        zones = self.zones_for(call, config)
        family = config.machine_type.rsplit("-", 1)[0]
        shapes = [shape for shape in self.compute.family(zones[0], family) if shape.name == config.machine_type] if zones else []
        if not shapes:
            return {"booting": [], "failures": [f"machine type {config.machine_type!r} does not exist in {zones[:1]}"]}
        machine = shapes[0]
        planned, failures = [], []
        with self._lock:
            budget = config.cpu_quota - self.live_cpus()
            for _ in range(count):
                if machine.cpus > budget:
                    failures.append(f"the cluster's CPU cap (cpu_quota={config.cpu_quota}) leaves {budget} vCPUs, too "
                                    f"few for another {machine.name}")
                    break
                budget -= machine.cpus
                planned.append(Planned(machine, machine_slots(machine, call) or 1))
            booting = self._start_boots(None, call, config, planned, zones, None, service_url)
        return {"booting": booting, "failures": failures}

    def _start_boots(self, job_id, call: Call, config: schema.ClusterConfig, planned: list[Planned], zones: list[str],
                     idle_timeout_s: float | None, service_url: str) -> list[dict]:
        """A BOOTING document for each planned VM (written together), then each VM's creation."""
        boots = [self._prepare_boot(job_id, call, config, plan, zones, idle_timeout_s, service_url) for plan in planned]
        if boots:
            self.store.set_nodes({boot[0]["node_id"]: boot[1] for boot in boots})
        for _, _, create in boots:
            self.pool.submit(*create)
        return [answer for answer, _, _ in boots]

    def _prepare_boot(self, job_id, call: Call, config: schema.ClusterConfig, plan: Planned, zones: list[str],
                      idle_timeout_s: float | None, service_url: str) -> tuple[dict, dict, tuple]:
        node_id = f"burla-node-{uuid.uuid4().hex[:10]}"
        image = self.image_for(call, config)
        gpu = bool(call.resources.func_gpu)
        idle = idle_timeout_s if idle_timeout_s is not None else (config.grow_idle_timeout_s if job_id else config.idle_timeout_s)
        attributes = NodeAttributes(
            database=self.settings.database, image=image, cpus=plan.machine.cpus,
            ram_gb=round(plan.machine.memory_gb * RAM_SHARE, 2), node_port=config.node_port, idle_timeout_s=idle,
            heartbeat_s=config.heartbeat_s, job_lease_s=config.job_lease_s, grown_for=job_id or "",
            cluster_url=service_url,
        )
        boot_image = config.gpu_boot_image if plan.machine.gpus else config.boot_image
        document = {
            "node_id": node_id, "status": schema.BOOTING, "boot_progress": "creating its VM", "zone": zones[0],
            "machine_type": plan.machine.name, "spot": config.spot, "image": image, "boot_image": boot_image,
            "cpus": plan.machine.cpus, "ram_gb": attributes.ram_gb, "gpus": [], "address": None,
            "grown_for": job_id, "idle_timeout_s": idle, "created_at": time.time(), "planned_slots": plan.slots,
        }
        script = startup_script(StartupConfig(image=image, package=config.node_package or f"burla-open[gcp-node]=={__version__}",
                                              gpu=gpu, database=self.settings.database))
        disk_gb = call.resources.disk_gb or config.disk_gb

        def instance(zone: str):
            return node_instance(name=node_id, zone=zone, machine_type=plan.machine.name, boot_image=boot_image,
                                 disk_gb=disk_gb, spot=config.spot, gpus=plan.machine.gpus,
                                 service_account=self.settings.node_service_account,
                                 attributes=attributes.to_metadata(), startup_script=script)

        answer = {"node_id": node_id, "machine_type": plan.machine.name, "slots": plan.slots}
        return answer, document, (self._create, node_id, plan.machine.name, zones, instance)

    def _create(self, node_id: str, machine_type: str, zones: list[str], instance) -> None:
        reasons = []
        for zone in zones:
            try:
                if zone != zones[0]:
                    self.store.set_node(node_id, {"zone": zone, "boot_progress": f"creating its VM in {zone}"})
                self.compute.create(zone, instance(zone))
            except GcpOperationFailed as failure:
                reason = "; ".join(f"{e.code}: {e.message}" for e in failure.errors)
                reasons.append(f"{zone}: {reason}")
                if failure.zone_exhausted:
                    continue  # GCE: try the region's next zone
                break
            except Exception as error:  # an API error (403, 400...): the boot fails with it
                reasons.append(f"{zone}: {type(error).__name__}: {error}")
                break
            else:
                self.store.set_node(node_id, {"boot_progress": "booting"})
                return
        why = f"{node_id} ({machine_type}) could not be created: " + " | ".join(reasons)
        log.warning("%s", why)
        self.store.set_node(node_id, {"status": schema.FAILED, "status_reason": why, "ended_at": time.time()})

    # --- ending --------------------------------------------------------------------------------

    def fail_node(self, node: dict, reason: str) -> None:
        """The service gives up on a node: FAILED with why (and its serial console's end), VM deleted."""
        zone = node.get("zone") or ""
        tail = self.compute.serial_tail(zone, node["node_id"]) if node.get("status") == schema.BOOTING else ""
        self.store.set_node(node["node_id"], {
            "status": schema.FAILED, "status_reason": reason + (f"; its serial console ends: {tail.strip()[-300:]}" if tail.strip() else ""),
            "ended_at": time.time(),
        })
        self.delete_vm(node["node_id"], zone)

    def delete_node(self, node: dict, reason: str) -> None:
        """Delete a node's VM on purpose (an administrator's request): DELETED with why."""
        self.store.set_node(node["node_id"], {"status": schema.DELETED, "status_reason": reason, "ended_at": time.time()})
        self.delete_vm(node["node_id"], node.get("zone") or "")

    def delete_vm(self, node_id: str, zone: str) -> None:
        try:
            self.compute.delete(zone, node_id, wait=False)
        except Exception:  # logged: the registry retries nothing, an administrator sees the VM listed
            log.warning("deleting the VM of node %s failed", node_id, exc_info=True)
