"""The records that cross a boundary between the core, the scheduler and a backend's plugins.

Events travel as small lists (not objects) because a job moves one event per batch of inputs and
a busy job makes tens of thousands of them a second: `[kind, node_id, data]`.
"""

from __future__ import annotations

import queue
from dataclasses import dataclass, field
from typing import Any, Callable

# Event kinds a node session puts on the job's EventSink.
RESULTS = "results"  # data: list of (input_index, pickled_result)
LOGS = "logs"  # data: list of (input_index, stream 1|2, text)
ERROR = "error"  # data: (input_index, ErrorInfo as dict)
NODE_LOST = "node_lost"  # data: reason (str)
STARTED = "started"  # data: None; the first batches are out
NOTICE = "notice"  # data: text for the caller's stderr (a retried input, a replaced worker)


@dataclass(frozen=True)
class GpuInfo:
    index: int
    name: str  # as nvidia-smi reports it, e.g. "NVIDIA H100 80GB HBM3"
    family: str  # the func_gpu family it satisfies, e.g. "H100_80G", or "" for an unknown model
    memory_gb: float


@dataclass
class NodeInfo:
    """A machine that can run calls, as a provisioner reports it."""

    node_id: str
    cpus: int
    ram_gb: float
    gpus: list[GpuInfo] = field(default_factory=list)
    image: str | None = None
    address: str | None = None  # where the transport reaches it (None: this process)
    slots: int = 0  # filled in by the provisioner for one call's resource request


@dataclass(frozen=True)
class ResourceRequest:
    """What one running call needs; the provisioner turns it into slots per node."""

    func_cpu: int = 1
    func_ram: int = 4
    func_gpu: str | None = None
    image: str | None = None


@dataclass
class JobSpec:
    job_id: str
    function_bytes: bytes  # cloudpickled function
    function_name: str
    resources: ResourceRequest
    max_parallelism: int | None = None
    detach: bool = False
    grow: bool = False
    options: dict[str, Any] = field(default_factory=dict)  # backend_options


@dataclass
class InputBatch:
    """Inputs sent together to one node; `items` are (input_index, pickled_args_tuple)."""

    batch_id: int
    items: list[tuple[int, bytes]]


class EventSink:
    """Where node sessions put events for the scheduler. Thread-safe; `get` wakes on Ctrl-C."""

    def __init__(self) -> None:
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self.put: Callable[[list], None] = self._queue.put

    def get(self, timeout: float | None) -> list | None:
        try:
            return self._queue.get(timeout=timeout)
        except queue.Empty:
            return None

    def get_nowait(self) -> list | None:
        try:
            return self._queue.get_nowait()
        except queue.Empty:
            return None
