"""Which nodes fit a call: one owner of the rule, used by the cluster service (which nodes to
hand a caller, what to boot) and by the provisioner (how many slots a node gives the call).

A node document fits a call when its agent serves (READY or RUNNING, heartbeat fresh), runs the
call's image (any image when the call names none), runs the caller's Python feature release and
burla version (pickles travel only between those), and has room for at least one call of its
func_cpu / func_ram / func_gpu.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from burla_core.gpus import describe_func_gpu
from burla_core.node.capacity import NodeCapacity
from burla_core.node.protocol import python_feature_version
from burla_core.types import GpuInfo, ResourceRequest

from . import schema

# The RAM a node's agent offers of its machine's: what the agent itself offers by default.
RAM_SHARE = 0.9


@dataclass(frozen=True)
class Call:
    """One call's needs, as the caller sends them to the service."""

    resources: ResourceRequest
    python: str  # the caller's "3.11.7"
    burla: str

    def to_wire(self) -> dict[str, Any]:
        r = self.resources
        return {"func_cpu": r.func_cpu, "func_ram": r.func_ram, "func_gpu": r.func_gpu, "func_gpu_name": r.func_gpu_name,
                "image": r.image, "region": r.region, "disk_gb": r.disk_gb, "grow": r.grow,
                "python": self.python, "burla": self.burla}

    @classmethod
    def from_wire(cls, data: Any) -> "Call":
        """The call from its JSON; ValueError names a wrong field."""
        if not isinstance(data, dict):
            raise ValueError("the call must be a JSON object")

        def number(key: str, minimum: int, default: int | None) -> int | None:
            value = data.get(key, default)
            if value is None and default is None:
                return None
            if type(value) is not int or value < minimum:
                raise ValueError(f"{key} must be an int >= {minimum}; got {value!r}")
            return value

        def text(key: str) -> str | None:
            value = data.get(key)
            if value is not None and (not isinstance(value, str) or not value.strip()):
                raise ValueError(f"{key} must be a non-empty string or null; got {value!r}")
            return value

        from burla_core.gpus import GCP_MACHINE_TYPES

        gpu = text("func_gpu")
        if gpu is not None and gpu not in GCP_MACHINE_TYPES:
            raise ValueError(f"func_gpu must be one of {sorted(GCP_MACHINE_TYPES)}; got {gpu!r}")
        python, burla = text("python"), text("burla")
        if python is None or burla is None:
            raise ValueError("the call must name the caller's python and burla versions")
        grow = data.get("grow", False)
        if not isinstance(grow, bool):
            raise ValueError(f"grow must be true or false; got {grow!r}")
        resources = ResourceRequest(
            func_cpu=number("func_cpu", 1, 1), func_ram=number("func_ram", 1, 4), func_gpu=gpu,
            image=text("image"), region=text("region"), disk_gb=number("disk_gb", 10, None),
            func_gpu_name=text("func_gpu_name"), grow=grow,
        )
        return cls(resources, python, burla)


def capacity_of(node: dict) -> NodeCapacity:
    gpus = [GpuInfo(index=int(g.get("index", i)), name=str(g.get("name", "")), family=str(g.get("family", "")),
                    memory_gb=float(g.get("memory_gb", 0))) for i, g in enumerate(node.get("gpus") or [])]
    return NodeCapacity(cpus=int(node.get("cpus") or 0), ram_gb=float(node.get("ram_gb") or 0), gpus=gpus,
                        image=node.get("image"))


def slots_for(node: dict, call: Call) -> int:
    """How many calls of `call` the node runs at once (0: it does not fit)."""
    if node.get("status") not in schema.SERVING_STATUSES:
        return 0
    if call.resources.image is not None and node.get("image") != call.resources.image:
        return 0
    if python_feature_version(str(node.get("python") or "")) != python_feature_version(call.python):
        return 0
    if node.get("burla") != call.burla:
        return 0
    r = call.resources
    return capacity_of(node).max_slots(r.func_cpu, r.func_ram, r.func_gpu)


def describe(node: dict) -> str:
    gpus = ", ".join(g.get("name", "?") for g in node.get("gpus") or []) or "no GPU"
    return (f"{node.get('node_id')} ({node.get('machine_type')}: {node.get('cpus')} CPUs, "
            f"{float(node.get('ram_gb') or 0):.1f} GB RAM, {gpus}, image {node.get('image')!r}, "
            f"Python {node.get('python')})")


def why_none_fit(call: Call, serving: list[dict]) -> str:
    """The NoCompatibleNodes message: what the call asked, what the nodes have, what to do."""
    r = call.resources
    asked = r.describe()
    if not serving:
        return (f"the cluster has no running node for {asked}; call with grow=True to boot one, "
                "or start nodes from the dashboard")
    images = sorted({str(node.get("image")) for node in serving})
    text = f"no node of the cluster can run {asked}: " + "; ".join(describe(node) for node in serving) + "."
    if r.image is not None and r.image not in images:
        text += (f" No node runs image {r.image!r} (the cluster's nodes run: {', '.join(map(repr, images))}); "
                 f"call with grow=True to boot nodes with it.")
    elif r.func_gpu is not None:
        text += f" Call with grow=True to boot a node with {describe_func_gpu(r.func_gpu, r.func_gpu_name)}."
    else:
        text += " Call with grow=True to boot nodes that fit."
    return text
