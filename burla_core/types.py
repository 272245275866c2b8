"""The records that cross a boundary between the core, the scheduler and a backend's plugins.

Events travel as small lists (not objects) because a job moves one event per batch of inputs and
a busy job makes tens of thousands of them a second: `[kind, node_id, data]`, with the kinds and
their data declared below. A session never puts an event after its own NODE_LOST; the scheduler
also drops anything a node sends after it was declared lost, so exactly-once holds for any
transport.
"""

from __future__ import annotations

import queue
import threading
from dataclasses import dataclass, field
from typing import Any, Callable

# --- event kinds --------------------------------------------------------------------------------
# Put on a job's EventSink by node sessions (and by Membership, for a provisioner):
RESULTS = "results"  # data: list of (input_index, pickled_result)
LOGS = "logs"  # data: list of (input_index, stream 1|2, text); text ends a line, or is a piece of one
ERROR = "error"  # data: (input_index, ErrorInfo)
NODE_LOST = "node_lost"  # data: reason (str); the node's unfinished inputs run elsewhere
NOTICE = "notice"  # data: text for the caller's stderr (a retried input, a replaced worker)
NODE_STATUS = "node_status"  # data: text shown in the progress line for this node ("" clears it)
NODE_JOINED = "node_joined"  # data: NodeInfo, with slots > 0: a node that became ready mid-job
GROWTH_ENDED = "growth_ended"  # data: list of failure reasons; no more nodes will join this job
# Yielded by the scheduler to the core:
STARTED = "started"  # data: None; the first batches are out (or the job waits for its first node)
TICK = "tick"  # data: None; nothing happened for a while (lets the caller redraw its progress line)

EVENT_KINDS = frozenset({RESULTS, LOGS, ERROR, NODE_LOST, NOTICE, NODE_STATUS, NODE_JOINED, GROWTH_ENDED, STARTED, TICK})


@dataclass(frozen=True)
class GpuInfo:
    index: int
    name: str  # as nvidia-smi reports it, e.g. "NVIDIA H100 80GB HBM3"
    family: str  # the func_gpu family it satisfies, e.g. "H100_80G", or "" for an unknown model
    memory_gb: float


@dataclass(frozen=True)
class NodeAccess:
    """What a caller needs to reach one node's agent, when its backend gives it per node: the
    bearer token, and the CA that signed the node's TLS certificate (a file, or PEM text)."""

    token: str
    ca_file: str | None = None
    ca_pem: str | None = None

    def __repr__(self) -> str:  # never show the token
        return f"NodeAccess(ca_file={self.ca_file!r}, ca_pem={'...' if self.ca_pem else None})"


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
    access: NodeAccess | None = None  # per-node credentials for the transport, if the backend has them


@dataclass(frozen=True)
class ResourceRequest:
    """What one running call needs; the provisioner turns it into slots per node. `func_gpu` is
    the canonical family ("H100_80G"); `func_gpu_name` the name as the caller passed it ("H100"),
    for messages. `region` and `disk_gb` apply to nodes booted for the call; `grow` says whether
    the call may boot nodes (grow=True), so that a provisioner with no fitting node ready can
    raise NoCompatibleNodes at once when it may not."""

    func_cpu: int = 1
    func_ram: int = 4
    func_gpu: str | None = None
    image: str | None = None
    region: str | None = None
    disk_gb: int | None = None
    func_gpu_name: str | None = None
    grow: bool = False

    def describe(self) -> str:
        """The request as the caller wrote it, for error messages."""
        text = f"func_cpu={self.func_cpu}, func_ram={self.func_ram}"
        if self.func_gpu is not None:
            name = self.func_gpu_name or self.func_gpu
            text += f", func_gpu={name!r}" + ("" if name == self.func_gpu else f" (an {self.func_gpu} GPU)")
        if self.image is not None:
            text += f", image={self.image!r}"
        return text


@dataclass
class JobSpec:
    job_id: str
    function_bytes: bytes  # cloudpickled function
    function_name: str
    resources: ResourceRequest
    max_parallelism: int | None = None
    detach: bool = False
    grow: bool = False
    raise_errors: bool = True  # False: a failed input's exception is its result; the job goes on
    options: dict[str, Any] = field(default_factory=dict)  # backend_options
    input_count: int | None = None  # len(inputs) when it has one: a hint (progress, dashboards), not a promise


@dataclass
class InputBatch:
    """Inputs sent together to one node; `items` are (input_index, pickled_args_tuple)."""

    batch_id: int
    items: list[tuple[int, bytes]]


# --- errors -------------------------------------------------------------------------------------

FUNCTION_ERROR = "function"  # the function raised
WORKER_DIED = "worker_died"  # the worker running the input died twice
UNPICKLABLE_RESULT = "unpicklable_result"  # the function returned something that does not pickle
JOB_SETUP_FAILED = "job_setup_failed"  # the node could not make the job's environment (a BurlaError)
ERROR_KINDS = (FUNCTION_ERROR, WORKER_DIED, UNPICKLABLE_RESULT, JOB_SETUP_FAILED)


@dataclass
class ErrorInfo:
    """Why one input failed, as a worker (or a pool, for a worker's death) reports it.

    `pickled` is the cloudpickled exception when it pickles; `type_name`, `message` and
    `traceback` are always there, so that the caller can say what happened even when the type
    cannot be rebuilt on its machine. `frames` are (file, line, function, source line) of the
    user's frames, for rendering a traceback whose source the worker could not read."""

    type_name: str
    message: str
    traceback: str = ""
    frames: list[tuple[str, int, str, str]] = field(default_factory=list)
    exception_only: str = ""
    pickled: bytes | None = None
    kind: str = FUNCTION_ERROR
    how: str = ""  # for WORKER_DIED: how the worker died ("was killed by SIGKILL")

    def to_wire(self) -> dict:
        """A plain dict for msgpack (pipes to workers, frames to callers)."""
        return {
            "kind": self.kind,
            "type_name": self.type_name,
            "message": self.message,
            "traceback": self.traceback,
            "frames": [list(frame) for frame in self.frames],
            "exception_only": self.exception_only,
            "pickled": self.pickled,
            "how": self.how,
        }

    @classmethod
    def from_wire(cls, data: Any) -> "ErrorInfo":
        """The record from `to_wire`'s dict, every field checked: ValueError says what is wrong."""
        if not isinstance(data, dict):
            raise ValueError(f"error info must be a map, not {type(data).__name__}")
        kind = data.get("kind", FUNCTION_ERROR)
        if kind not in ERROR_KINDS:
            raise ValueError(f"error info: unknown kind {kind!r}")
        texts = {}
        for key in ("type_name", "message", "traceback", "exception_only", "how"):
            value = data.get(key, "")
            if not isinstance(value, str):
                raise ValueError(f"error info: {key!r} must be a string")
            texts[key] = value
        pickled = data.get("pickled")
        if pickled is not None and not isinstance(pickled, (bytes, bytearray, memoryview)):
            raise ValueError("error info: 'pickled' must be bytes or None")
        frames = []
        for frame in data.get("frames") or []:
            if not (isinstance(frame, (list, tuple)) and len(frame) == 4):
                raise ValueError("error info: each frame must be [file, line, function, source]")
            filename, lineno, name, line = frame
            frames.append((str(filename), int(lineno), str(name), str(line or "")))
        return cls(
            type_name=texts["type_name"] or "Exception",
            message=texts["message"],
            traceback=texts["traceback"],
            frames=frames,
            exception_only=texts["exception_only"],
            pickled=bytes(pickled) if pickled is not None else None,
            kind=kind,
            how=texts["how"],
        )


# --- progress -----------------------------------------------------------------------------------


@dataclass
class JobProgress:
    """What the caller's progress line shows, kept by the scheduler."""

    total: int | None = None  # inputs; None until known (an iterator without len)
    done: int = 0
    failed: int = 0
    running: int = 0  # calls running now, as far as the scheduler can tell
    slots: int = 0  # slots of the nodes the job runs on
    nodes: int = 0
    node_status: dict[str, str] = field(default_factory=dict)  # node_id -> "booting", "installing 3 packages"
    waiting_for_nodes: bool = False


# --- the event queue and a provisioner's view of it ---------------------------------------------


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


class Membership:
    """How a provisioner tells a running job about its nodes (from any thread): a node that
    became ready joins, a node that went away leaves, a boot's progress shows in the caller's
    progress line, and `growth_ended` says that no more nodes will come. Calls after the job
    ended are ignored (`closed` says so)."""

    def __init__(self, events: EventSink, wanted_slots: int, growing: bool) -> None:
        self._events = events
        self._lock = threading.Lock()
        self.wanted_slots = wanted_slots  # slots the job could still use beyond its first nodes
        self.expected_slots = 0  # slots of nodes booting for it (`expect`): batches stay small for them
        self.growing = growing
        self.closed = False

    def _put(self, event: list) -> None:
        with self._lock:
            if not self.closed:
                self._events.put(event)

    def expect(self, slots: int) -> None:
        """`slots` more are booting for this job (negative: fewer, a boot failed): until they
        join, the job keeps its batches small enough to leave them work."""
        with self._lock:
            self.expected_slots = max(0, self.expected_slots + slots)  # negative: a boot failed

    def join(self, node: NodeInfo) -> None:
        """`node` is ready: the job starts sending it inputs at once. `node.slots` must be > 0."""
        if node.slots < 1:
            raise ValueError(f"node {node.node_id} joined with slots={node.slots}; a joining node needs slots > 0")
        with self._lock:
            self.expected_slots = max(0, self.expected_slots - node.slots)
        self._put([NODE_JOINED, node.node_id, node])

    def leave(self, node_id: str, reason: str) -> None:
        """`node_id` went away (deleted, preempted): its unfinished inputs run elsewhere."""
        self._put([NODE_LOST, node_id, reason])

    def status(self, node_id: str, text: str) -> None:
        """What a node is doing ("booting, 20 s"); "" clears it."""
        self._put([NODE_STATUS, node_id, text])

    def notice(self, text: str) -> None:
        self._put([NOTICE, None, text])

    def growth_ended(self, failures: list[str] | None = None) -> None:
        """No more nodes will join; `failures` are the reasons of boots that failed."""
        with self._lock:
            if self.closed or not self.growing:
                return
            self.growing = False
            self._events.put([GROWTH_ENDED, None, list(failures or [])])

    def close(self) -> None:
        with self._lock:
            self.closed = True
