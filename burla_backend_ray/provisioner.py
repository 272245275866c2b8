"""The nodes of the Ray cluster as Burla nodes: slots from each node's Ray resources (CPU,
memory, GPU) for the call's func_cpu / func_ram / func_gpu, so that a request no node can ever
satisfy fails at once instead of leaving a task pending forever; nodes that join or leave while
a job runs join or leave the job."""

from __future__ import annotations

import logging
import os
import threading

from burla_core.errors import NoNodes, VersionMismatch
from burla_core.gpus import matching
from burla_core.engine.fit import raise_nothing_fits
from burla_core.interfaces import Provisioner
from burla_core.machine import GIB
from burla_core.node.protocol import burla_version, python_version, version_mismatch
from burla_core.types import GpuInfo, JobSpec, Membership, NodeInfo, ResourceRequest

from .connection import connect
from .remote import NESTED_ENV
from .settings import RaySettings

log = logging.getLogger("burla.ray")

WATCH_SECONDS = 2.0
PROBE_SECONDS = 60.0

_facts: dict[str, dict | str] = {}  # Ray node id -> what its probe said, or why it could not


def alive_nodes() -> list[dict]:
    import ray

    return [node for node in ray.nodes() if node.get("Alive")]


def probe_nodes(node_ids: list[str]) -> dict[str, dict | str]:
    """What each node has, asked once per node with a tiny task pinned to it (no CPU needed)."""
    missing = [node_id for node_id in node_ids if node_id not in _facts]
    if missing:
        import ray
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        from .remote import probe

        remote_probe = ray.remote(num_cpus=0, max_retries=0)(probe)
        refs = {
            node_id: remote_probe.options(scheduling_strategy=NodeAffinitySchedulingStrategy(node_id, soft=False)).remote()
            for node_id in missing
        }
        for node_id, ref in refs.items():
            try:
                _facts[node_id] = ray.get(ref, timeout=PROBE_SECONDS)
            except Exception as error:  # the node cannot run Burla's code (not installed), or never answered
                _facts[node_id] = f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"
                ray.cancel(ref, force=True)
    return {node_id: _facts[node_id] for node_id in node_ids if node_id in _facts}


def describe_node(node: dict) -> str:
    resources = node.get("Resources", {})
    cpus = resources.get("CPU", 0)
    memory = resources.get("memory", 0) / GIB
    gpus = resources.get("GPU", 0)
    kinds = sorted(key.split(":", 1)[1] for key in resources if key.startswith("accelerator_type:"))
    gpu_text = f"{gpus:g} GPU(s)" + (f" ({', '.join(kinds)})" if kinds else "") if gpus else "no GPU"
    return f"node {node.get('NodeManagerAddress')} ({node['NodeID'][:8]}) has {cpus:g} CPU(s), {memory:.1f} GiB of Ray memory, {gpu_text}"


def node_slots(node: dict, facts: dict, request: ResourceRequest, nested: bool) -> NodeInfo:
    """The node as a Burla node with `slots` for `request` (0: it can never run it). A call made
    inside a Burla call on Ray asks for no CPU or memory: its caller waits on it with both."""
    resources = node.get("Resources", {})
    cpus = int(resources.get("CPU", 0))
    ram_bytes = resources.get("memory", 0)
    gpus = [GpuInfo(index=g[0], name=g[1], family=g[2], memory_gb=g[3]) for g in facts.get("gpus", [])]
    if nested:
        slots = max(1, min(cpus // request.func_cpu, int(ram_bytes // (request.func_ram * GIB))))
    else:
        slots = min(cpus // request.func_cpu, int(ram_bytes // (request.func_ram * GIB)))
    if request.func_gpu is not None:
        gpus = matching(gpus, request.func_gpu)
        slots = min(slots, len(gpus), int(resources.get("GPU", 0)))
    image = facts.get("image")
    if request.image is not None and image != request.image:
        slots = 0
    return NodeInfo(
        node_id=node["NodeID"], cpus=cpus, ram_gb=ram_bytes / GIB, gpus=gpus, image=image,
        address=node.get("NodeManagerAddress"), slots=max(0, slots),
    )


class RayProvisioner(Provisioner):
    def __init__(self, options: dict | None = None) -> None:
        super().__init__(options)
        self.settings = RaySettings.from_options(self.options)

    def _nodes(self, nodes: list[dict], request: ResourceRequest) -> tuple[list[NodeInfo], list[str], list[str]]:
        nested = bool(os.environ.get(NESTED_ENV))
        facts = probe_nodes([node["NodeID"] for node in nodes])
        usable, refused, broken = [], [], []
        for node in nodes:
            fact = facts.get(node["NodeID"])
            if not isinstance(fact, dict):
                broken.append(f"{describe_node(node)} but cannot run Burla's code ({fact or 'no answer'})")
                continue
            mismatch = version_mismatch(python_version(), burla_version(), fact["python"], fact["burla"])
            if mismatch:
                raise VersionMismatch(f"Ray {describe_node(node)}: {mismatch}")
            info = node_slots(node, fact, request, nested)
            if info.slots > 0:
                usable.append(info)
            else:
                refused.append(describe_node(node) + (f", image {fact['image']!r}" if fact.get("image") else ""))
        return usable, refused, broken

    def eligible_nodes(self, request: ResourceRequest) -> list[NodeInfo]:
        connect(self.settings.address)
        nodes = alive_nodes()
        if not nodes:
            raise NoNodes("the Ray cluster has no live node")
        usable, refused, broken = self._nodes(nodes, request)
        if usable:
            return usable
        raise_nothing_fits(
            "Ray node", request, refused, broken,
            install="Install this package (burla-open, with the [ray] extra) at the caller's version on every node.",
            gpu_hint="needs a node with such a GPU.", image_hint="Nodes",
            advice="Lower func_cpu/func_ram, or add nodes with more CPUs or memory (ray start --num-cpus/--memory).",
        )

    def watch_job(self, job: JobSpec, nodes: list[NodeInfo], membership: Membership) -> None:
        membership.growth_ended()  # Burla does not scale a Ray cluster; nodes it gains still join
        known = {node.node_id for node in nodes}
        threading.Thread(
            target=self._watch, args=(job.resources, known, membership), name="burla-ray-watch", daemon=True
        ).start()

    def _watch(self, request: ResourceRequest, known: set[str], membership: Membership) -> None:
        stop = threading.Event()
        while not membership.closed and not stop.wait(WATCH_SECONDS):
            try:
                nodes = alive_nodes()
            except Exception:
                log.debug("asking Ray for its nodes failed", exc_info=True)
                continue
            alive = {node["NodeID"] for node in nodes}
            for node_id in sorted(known - alive):
                known.discard(node_id)
                membership.leave(node_id, "the Ray node died or left the cluster")
            joined = [node for node in nodes if node["NodeID"] not in known]
            if not joined:
                continue
            try:
                usable, _, _ = self._nodes(joined, request)
            except Exception:
                log.debug("probing new Ray nodes failed", exc_info=True)
                continue
            for info in usable:
                known.add(info.node_id)
                membership.join(info)
