"""An in-memory cluster: a provisioner and a transport whose nodes are threads of this process.

For plugin authors (test a scheduler or the layer above a transport without a network, as
httpx's MockTransport does for HTTP clients) and for the default scheduler's own tests:

    cluster = MemoryCluster([MemoryNode("a", slots=2)])
    plugin = cluster.plugin("memory")               # registers backend "memory"
    registry = load_registry(extra_plugins=(plugin,))
    ...
    cluster.add_node(MemoryNode("b", slots=4))      # joins every running job at once
    cluster.nodes["a"].lose("pulled the plug")      # its sessions report NODE_LOST

Each session runs its node's slots as threads that unpickle the job's function and call it on
each input (or call `node.handler(function, args)` instead). A node can be slowed (`delay`),
paused, lost, or made to keep talking after it was lost (`talk_after_lost`: a broken transport
the scheduler must ignore). Nodes record which inputs they ran and their peak concurrency.
Output the functions print is not captured (the threads share this process's stdout).
"""

from __future__ import annotations

import collections
import pickle
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from .errors import NoCompatibleNodes
from .hookspecs import ProvisionerRecord, TransportRecord, hookimpl
from .interfaces import NodeSession, Provisioner, Transport
from .serialization import dumps, error_info
from .types import (
    ERROR,
    NODE_LOST,
    RESULTS,
    UNPICKLABLE_RESULT,
    EventSink,
    GpuInfo,
    InputBatch,
    JobSpec,
    Membership,
    NodeInfo,
    ResourceRequest,
)


@dataclass(eq=False)
class MemoryNode:
    """A node of the in-memory cluster. `slots` calls of 1 CPU at a time by default; a request
    for more CPUs or RAM fits as many as `cpus` and `ram_gb` allow."""

    node_id: str
    slots: int = 2
    cpus: int | None = None  # defaults to `slots`
    ram_gb: float | None = None  # defaults to 4 GB per slot
    gpus: list[GpuInfo] = field(default_factory=list)
    image: str | None = None
    delay: float = 0.0  # extra seconds per call: a slow node
    boot_seconds: float = 0.0  # for nodes booted by grow=True: how long until it joins
    boot_failure: str | None = None  # for nodes booted by grow=True: the reason its boot fails
    inline: bool = False  # run batches in submit() itself, for overhead benchmarks
    talk_after_lost: bool = False
    min_batch_seconds: float = 0.0  # its sessions' NodeSession.min_batch_seconds
    batch_split: int = 4  # ... and NodeSession.batch_split
    batch_growth: int = 2  # ... NodeSession.batch_growth
    max_batch_seconds: float = 1.0  # ... NodeSession.max_batch_seconds
    even_tail: bool = False  # ... and NodeSession.even_tail
    handler: Callable[[Callable, tuple], Any] | None = None
    # what happened, for assertions
    ran: list[int] = field(default_factory=list)
    running: int = 0
    peak_running: int = 0

    def __post_init__(self) -> None:
        self.cpus = self.cpus if self.cpus is not None else self.slots
        self.ram_gb = self.ram_gb if self.ram_gb is not None else 4.0 * self.slots
        self._lock = threading.Lock()
        self._resume = threading.Event()
        self._resume.set()
        self._sessions: list[MemorySession] = []
        self.lost_reason: str | None = None

    def slots_for(self, request: ResourceRequest) -> int:
        slots = min(self.slots, self.cpus // request.func_cpu, int(self.ram_gb // request.func_ram))
        if request.func_gpu is not None:
            slots = min(slots, sum(1 for gpu in self.gpus if gpu.family == request.func_gpu))
        if request.image is not None and request.image != self.image:
            slots = 0
        return max(0, slots)

    def info(self, request: ResourceRequest) -> NodeInfo:
        return NodeInfo(self.node_id, self.cpus, self.ram_gb, list(self.gpus), self.image, f"memory://{self.node_id}", self.slots_for(request))

    def pause(self) -> None:
        """Stop starting calls (running ones finish): a node that stops answering."""
        self._resume.clear()

    def resume(self) -> None:
        self._resume.set()

    def lose(self, reason: str = "lost") -> None:
        """The node goes away: its sessions report NODE_LOST (and, unless `talk_after_lost`,
        put nothing more)."""
        self.lost_reason = reason
        for session in list(self._sessions):
            session.report_lost(reason)

    def _started(self, input_index: int) -> None:
        with self._lock:
            self.ran.append(input_index)
            self.running += 1
            self.peak_running = max(self.peak_running, self.running)

    def _ended(self) -> None:
        with self._lock:
            self.running -= 1


class MemoryCluster:
    """The nodes of an in-memory backend, shared by its provisioner and transport."""

    def __init__(self, nodes: list[MemoryNode] = (), bootable: list[MemoryNode] = ()) -> None:
        self.nodes: dict[str, MemoryNode] = {node.node_id: node for node in nodes}
        self.bootable: collections.deque[MemoryNode] = collections.deque(bootable)  # for grow=True
        self.boot_failures: list[str] = []  # reasons reported when growth ends
        self._memberships: list[tuple[ResourceRequest, Membership]] = []
        self._lock = threading.Lock()

    def add_node(self, node: MemoryNode) -> None:
        """A node becomes ready: every running job it can serve takes it at once."""
        with self._lock:
            self.nodes[node.node_id] = node
            watchers = [(request, membership) for request, membership in self._memberships if not membership.closed]
        for request, membership in watchers:
            info = node.info(request)
            if info.slots > 0:
                membership.join(info)

    def remove_node(self, node_id: str, reason: str = "removed") -> None:
        """The provisioner says a node went away (as a cloud would for a deleted VM)."""
        with self._lock:
            self.nodes.pop(node_id, None)
            watchers = [membership for _, membership in self._memberships if not membership.closed]
        for membership in watchers:
            membership.leave(node_id, reason)

    def plugin(self, name: str = "memory") -> object:
        """A plugin object registering backend `name` (provisioner and transport) on this cluster."""
        cluster = self

        class _Plugin:
            @hookimpl
            def burla_register_provisioners(self, register) -> None:
                register(ProvisionerRecord(name=name, factory=lambda options: MemoryProvisioner(cluster, options), transport=name))

            @hookimpl
            def burla_register_transports(self, register) -> None:
                register(TransportRecord(name=name, factory=lambda options: MemoryTransport(cluster, options)))

        return _Plugin()


class MemoryProvisioner(Provisioner):
    honours = frozenset({"grow"})

    def __init__(self, cluster: MemoryCluster, options: dict | None = None) -> None:
        super().__init__(options)
        self.cluster = cluster

    def eligible_nodes(self, request: ResourceRequest) -> list[NodeInfo]:
        with self.cluster._lock:
            nodes = [node.info(request) for node in self.cluster.nodes.values() if node.lost_reason is None]
            bootable = any(node.slots_for(request) > 0 for node in self.cluster.bootable)
        ready = [info for info in nodes if info.slots > 0]
        if not ready and not bootable:
            raise NoCompatibleNodes(f"no in-memory node can run {request.describe()}")
        return ready

    def watch_job(self, job: JobSpec, nodes: list[NodeInfo], membership: Membership) -> None:
        with self.cluster._lock:
            self.cluster._memberships.append((job.resources, membership))
        if not job.grow:
            membership.growth_ended()
            return
        threading.Thread(target=self._boot, args=(job.resources, membership), name="memory-boot", daemon=True).start()

    def _boot(self, request: ResourceRequest, membership: Membership) -> None:
        """Boot the cluster's bootable nodes one after another, each after its boot delay."""
        started = time.monotonic()
        failures = list(self.cluster.boot_failures)
        with self.cluster._lock:
            membership.expect(sum(node.slots_for(request) for node in self.cluster.bootable))
        while not membership.closed:
            with self.cluster._lock:
                node = self.cluster.bootable.popleft() if self.cluster.bootable else None
            if node is None:
                break
            membership.status(node.node_id, "booting")
            time.sleep(max(0.0, started + node.boot_seconds - time.monotonic()))
            if membership.closed:
                break
            if node.boot_failure is not None:
                failures.append(f"{node.node_id}: {node.boot_failure}")
                membership.expect(-node.slots_for(request))
                membership.status(node.node_id, "")
                continue
            self.cluster.add_node(node)
        membership.growth_ended(failures)


class MemoryTransport(Transport):
    def __init__(self, cluster: MemoryCluster, options: dict | None = None) -> None:
        super().__init__(options)
        self.cluster = cluster

    def open_session(self, node: NodeInfo, job: JobSpec, slots: int, events: EventSink) -> NodeSession:
        return MemorySession(self.cluster.nodes[node.node_id], job, slots, events)


class MemorySession(NodeSession):
    def __init__(self, node: MemoryNode, job: JobSpec, slots: int, events: EventSink) -> None:
        self.node = node
        self.node_id = node.node_id
        self.slots = slots
        self.min_batch_seconds = node.min_batch_seconds
        self.batch_split = node.batch_split
        self.batch_growth = node.batch_growth
        self.max_batch_seconds = node.max_batch_seconds
        self.even_tail = node.even_tail
        self.events = events
        self.function = pickle.loads(job.function_bytes)
        self.queue: collections.deque[InputBatch] = collections.deque()
        self.ready = threading.Condition()
        self.canceled = self.closed = self.lost = False
        self.active = 0
        node._sessions.append(self)
        self.threads = []
        if not node.inline:
            for number in range(slots):
                thread = threading.Thread(target=self._slot, name=f"memory-{node.node_id}-{number}", daemon=True)
                thread.start()
                self.threads.append(thread)

    def _put(self, event: list) -> None:
        if self.lost and not self.node.talk_after_lost:
            return
        self.events.put(event)

    def report_lost(self, reason: str) -> None:
        with self.ready:
            if self.lost:
                return
            self.lost = True
            self.ready.notify_all()
        self.events.put([NODE_LOST, self.node_id, reason])

    def submit(self, batch: InputBatch) -> None:
        if self.node.inline:
            self._run_batch(batch)
            return
        with self.ready:
            self.queue.append(batch)
            self.ready.notify()

    def _slot(self) -> None:
        while True:
            with self.ready:
                while not self.queue and not (self.closed or (self.lost and not self.node.talk_after_lost)):
                    self.ready.wait()
                if not self.queue:
                    return
                batch = self.queue.popleft()
                self.active += 1
            try:
                self._run_batch(batch)
            finally:
                with self.ready:
                    self.active -= 1

    def _run_batch(self, batch: InputBatch) -> None:
        node = self.node
        for input_index, payload in batch.items:
            node._resume.wait()
            if self.canceled or (self.lost and not node.talk_after_lost):
                return
            node._started(input_index)
            try:
                if node.delay:
                    time.sleep(node.delay)
                args = pickle.loads(payload)
                result = node.handler(self.function, args) if node.handler else self.function(*args)
            except Exception as error:
                self._put([ERROR, self.node_id, (input_index, error_info(error, skip_frames=1))])
                continue
            finally:
                node._ended()
            try:
                pickled = dumps(result)
            except Exception as error:
                self._put([ERROR, self.node_id, (input_index, error_info(error, 0, kind=UNPICKLABLE_RESULT))])
                continue
            self._put([RESULTS, self.node_id, [(input_index, pickled)]])

    def cancel(self) -> None:
        with self.ready:
            self.canceled = True
            self.queue.clear()

    def close(self) -> None:
        with self.ready:
            self.canceled = self.closed = True
            self.queue.clear()
            self.ready.notify_all()
        if self in self.node._sessions:
            self.node._sessions.remove(self)

    def is_stopped(self) -> bool:
        with self.ready:
            return self.active == 0

    def wait_stopped(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while not self.is_stopped():
            if time.monotonic() > deadline:
                return False
            time.sleep(0.002)
        return True

