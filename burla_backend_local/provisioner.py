"""This machine as the one node of the local backend."""

from __future__ import annotations

import shutil
import subprocess

from burla_core.errors import ContainerEngineMissing, NoCompatibleNodes
from burla_core.gpus import describe_func_gpu, matching
from burla_core.machine import cpu_count, this_machine_gpus, usable_ram_gb
from burla_core.interfaces import Provisioner
from burla_core.types import NodeInfo, ResourceRequest

def container_engine() -> str | None:
    """A container engine that answers (its client alone is not enough), or None."""
    for engine in ("docker", "podman"):
        if shutil.which(engine) is None:
            continue
        try:
            if subprocess.run([engine, "info"], capture_output=True, timeout=15).returncode == 0:
                return engine
        except (subprocess.SubprocessError, OSError):
            continue
    return None


class LocalProvisioner(Provisioner):
    def eligible_nodes(self, request: ResourceRequest) -> list[NodeInfo]:
        cpus, ram_gb = cpu_count(), usable_ram_gb()
        gpus = list(this_machine_gpus())
        node = NodeInfo(node_id="local", cpus=cpus, ram_gb=ram_gb, gpus=gpus, address=None)
        have = f"this machine has {cpus} CPUs and {ram_gb:.1f} GB of usable RAM"
        slots = min(cpus // request.func_cpu, int(ram_gb // request.func_ram))
        if slots < 1:
            raise NoCompatibleNodes(
                f"no node can run func_cpu={request.func_cpu}, func_ram={request.func_ram}: {have}. "
                "Lower func_cpu/func_ram, or use a backend with bigger machines."
            )
        if request.func_gpu is not None:
            usable = matching(gpus, request.func_gpu)
            if not usable:
                found = ", ".join(f"{g.name} ({g.family or 'not a func_gpu type'})" for g in gpus) or "no NVIDIA GPU"
                raise NoCompatibleNodes(
                    f"{describe_func_gpu(request.func_gpu, request.func_gpu_name)} cannot run here: this machine has {found}. "
                    "Drop func_gpu, or run on a backend that has such GPUs."
                )
            slots = min(slots, len(usable))
            node.gpus = usable
        if request.image is not None:
            engine = container_engine()
            if engine is None:
                raise ContainerEngineMissing(
                    f"image={request.image!r} needs a container engine (docker or podman) on this machine, "
                    "and none answers (`docker info` / `podman info` failed or they are not installed). "
                    "Install one (Debian/Ubuntu: `sudo apt install podman`, or Docker Engine from "
                    "https://docs.docker.com/engine/install/) and start it, or leave image=None to run "
                    "in this Python environment. The image needs this burla version installed."
                )
            node.image = request.image
            node.address = engine
        node.slots = slots
        return [node]
