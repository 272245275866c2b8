"""What a node offers, and how its jobs share it: never more calls at once than fit.

    AgentJob queues ──► NodeSlots.admit(job)? ──yes──► one batch to the pool (one worker, one call
         (round-robin over jobs with work)  └──no───► it waits     at a time: its CPUs, RAM, GPU)
                         ▲
                         └──── a batch finished: release(job), then the next job in turn

A batch in the pool holds one worker, which runs one call at a time, so the node admits a batch
only while the CPUs, RAM and GPUs of one more call of its job are free. Summed over all jobs a
node never runs more calls than it has room for; a job that does not fit waits, and the round-
robin turn lets every job with work progress.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from ..gpus import matching
from ..machine import cpu_count, this_machine_gpus, usable_ram_gb
from ..types import GpuInfo


@dataclass
class NodeCapacity:
    """What this machine offers, as the agent measured it at start."""

    cpus: int
    ram_gb: float
    gpus: list[GpuInfo] = field(default_factory=list)
    image: str | None = None

    def max_slots(self, func_cpu: int, func_ram: int, func_gpu: str | None) -> int:
        """How many calls needing these resources fit on this machine at once (0: none)."""
        slots = min(self.cpus // max(1, func_cpu), int(self.ram_gb // max(1, func_ram)))
        if func_gpu is not None:
            slots = min(slots, len(matching(self.gpus, func_gpu)))
        return max(0, slots)

    def describe(self) -> str:
        return f"{self.cpus} CPUs, {self.ram_gb:.1f} GB RAM and {len(self.gpus)} GPU(s)"


def measure_capacity(cpus: int | None = None, ram_gb: float | None = None, image: str | None = None) -> NodeCapacity:
    """What this machine offers; `cpus`/`ram_gb` advertise less (to keep part of it for others)."""
    return NodeCapacity(
        cpus=cpus if cpus is not None else cpu_count(),
        ram_gb=ram_gb if ram_gb is not None else usable_ram_gb(),
        gpus=list(this_machine_gpus()),
        image=image,
    )


class SlotUser(Protocol):
    """What NodeSlots needs to know of a job."""

    job_id: str
    func_cpu: int
    func_ram: int
    gpu_indices: list[int]


class NodeSlots:
    """The CPUs, RAM and GPUs in use by the calls the node runs now (one per batch in the pool)."""

    def __init__(self, capacity: NodeCapacity) -> None:
        self.capacity = capacity
        self.cpus_used = 0
        self.ram_used = 0.0
        self.gpu_calls = 0
        self.calls = 0

    def fits(self, job: SlotUser) -> bool:
        if self.cpus_used + job.func_cpu > self.capacity.cpus:
            return False
        if self.ram_used + job.func_ram > self.capacity.ram_gb + 1e-9:
            return False
        if job.gpu_indices and self.gpu_calls >= len(job.gpu_indices):
            return False
        return True

    def take(self, job: SlotUser) -> None:
        self.cpus_used += job.func_cpu
        self.ram_used += job.func_ram
        self.gpu_calls += 1 if job.gpu_indices else 0
        self.calls += 1

    def give_back(self, job: SlotUser) -> None:
        self.cpus_used -= job.func_cpu
        self.ram_used -= job.func_ram
        self.gpu_calls -= 1 if job.gpu_indices else 0
        self.calls -= 1

    @property
    def free_cpus(self) -> int:
        return max(0, self.capacity.cpus - self.cpus_used)
