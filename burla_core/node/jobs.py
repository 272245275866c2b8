"""One job on a node: its queued inputs, its share of the node's slots, and its event log.

    POST batch ──► queue (bounded by the agent) ──feed: at most `share` batches──► WorkerPool
                                                                                      │ sink
    GET events ◄── frames after `after=` ◄── log: seq 1, 2, 3, ... ◄── RESULTS/LOGS/ERROR/NOTICE
                      POST ack ──► drops frames the caller has ─┘

The agent feeds the pool only `share` batches of a job at a time (one per slot), so the node's
slots can be divided among several jobs and re-divided as jobs come and go, and a job's queued
inputs wait here, where the agent counts their bytes for back-pressure. Events are numbered and
kept, encoded once, until the caller acknowledges them: a stream that drops is replayed from the
last frame the caller has, so nothing is lost and nothing is sent twice.

The pool calls `on_pool_event` from its reader thread; everything else runs on the agent's event
loop. `lock` guards what both touch.
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import threading
import time
from dataclasses import dataclass, field

from ..pool import WorkerPool
from ..types import ERROR, LOGS, NOTICE, RESULTS, GpuInfo
from .protocol import encode_frame

GIB = 2**30


@dataclass
class NodeCapacity:
    """What this machine offers, as the agent measured it at start."""

    cpus: int
    ram_gb: float
    gpus: list[GpuInfo] = field(default_factory=list)
    image: str | None = None

    def max_slots(self, func_cpu: int, func_ram: int, func_gpu: str | None) -> int:
        """How many calls needing these resources fit on this machine at once (0: none)."""
        from ..gpus import matching

        slots = min(self.cpus // max(1, func_cpu), int(self.ram_gb // max(1, func_ram)))
        if func_gpu is not None:
            slots = min(slots, len(matching(self.gpus, func_gpu)))
        return max(0, slots)


def divide_node(jobs: list["AgentJob"], capacity: NodeCapacity) -> dict[str, int]:
    """Each job's share of the node. Jobs with inputs to run divide it: one slot at a time,
    round-robin, while CPUs and RAM last and the job wants more; every such job gets at least one,
    so a new job never waits for an old one. A job with nothing to run takes no share (it gets
    its full size back the moment it has work, and the division is made again)."""
    free_cpu, free_ram = capacity.cpus, capacity.ram_gb
    busy = [job for job in jobs if not job.idle]
    shares = {job.job_id: 0 for job in busy}
    progressed = True
    while progressed:
        progressed = False
        for job in busy:
            if shares[job.job_id] >= job.max_slots:
                continue
            if free_cpu < job.func_cpu or free_ram < job.func_ram:
                continue
            shares[job.job_id] += 1
            free_cpu -= job.func_cpu
            free_ram -= job.func_ram
            progressed = True
    divided = {job.job_id: job.max_slots for job in jobs if job.idle}
    divided.update({job_id: max(1, share) for job_id, share in shares.items()})
    return divided


class AgentJob:
    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        pool: WorkerPool | None,
        job_id: str,
        function_bytes: bytes,
        function_name: str,
        max_slots: int,
        func_cpu: int,
        func_ram: int,
        func_gpu: str | None,
        gpu_indices: list[int],
        detach: bool,
        node_id: str,
        env: dict | None = None,
    ) -> None:
        self.loop = loop
        self.pool = pool
        self.job_id = job_id
        self.function_bytes = function_bytes
        self.function_name = function_name
        self.max_slots = max(1, max_slots)
        self.func_cpu = func_cpu
        self.func_ram = func_ram
        self.func_gpu = func_gpu
        self.detach = detach
        self.function_digest = ""
        self.on_progress = None  # called on the event loop when inputs settle: room, maybe idle
        self.was_idle = True  # as of the last division of the node's slots
        self.created = time.time()
        self.lock = threading.Lock()
        # inputs
        self.share = 1
        self.queue: collections.deque = collections.deque()  # (batch_id, items)
        self.batches: dict[int, list] = {}  # batch_id -> [unsettled inputs, bytes, in pool?]
        self.batch_of_input: dict[int, int] = {}
        self.seen_batches: set[int] = set()
        self.batches_in_pool = 0
        self.pending_bytes = 0
        self.submitted = self.done = self.failed = 0
        self.sealed = False
        self.state = "running"  # running | canceled | stopped
        # events
        self.log: collections.deque = collections.deque()  # (seq, frame pieces, size)
        self.last_seq = 0
        self.acked = 0
        self.log_bytes = 0
        self.changed = asyncio.Event()
        self._wake_pending = False
        # who is listening
        self.stream_generation = itertools.count(1)
        self.current_stream = 0
        self.streams_open = 0
        self.last_contact = time.monotonic()
        self.node_id = node_id
        self.env = dict(env or {})
        self.gpu_indices = gpu_indices
        self.setup_failure: dict | None = None  # why its environment could not be made
        self.on_release = None  # called once when the job is forgotten (its environment's leases)
        self.pool_job = None
        if pool is not None:
            self.start(pool)

    def start(self, pool: WorkerPool, worker_env: dict | None = None) -> None:
        """Its environment is ready: calls can run, in `pool`'s workers."""
        self.pool = pool
        self.pool_job = pool.open_job(
            self.function_bytes,
            self.share,
            self.on_pool_event,
            node_id=self.node_id,
            env={**self.env, **(worker_env or {})},
            ram_limit_bytes=self.func_ram * GIB,
            gpu_indices=self.gpu_indices or None,
        )
        self.feed()

    @property
    def started(self) -> bool:
        return self.pool_job is not None

    def notice(self, text: str) -> None:
        """A line for the caller's console (any thread)."""
        self.on_pool_event([NOTICE, self.node_id, text])

    def fail_setup(self, info: dict) -> None:
        """Its environment could not be made: the job fails with `info` on its first input
        (now, or when one arrives), before any input runs here."""
        self.setup_failure = info
        self._report_setup_failure()

    def _report_setup_failure(self) -> None:
        with self.lock:
            first = next(iter(self.batch_of_input), None)
        if first is None or self.state != "running":
            return
        self.on_pool_event([ERROR, self.node_id, (first, self.setup_failure)])
        self.cancel()

    # --- inputs (event loop) ---------------------------------------------------------------

    def is_duplicate(self, batch_id: int) -> bool:
        return batch_id in self.seen_batches

    def already_pending(self, items: list) -> int | None:
        """An input index of `items` that this job already holds (a hostile or broken caller)."""
        batch_of_input = self.batch_of_input
        for input_index, _ in items:
            if input_index in batch_of_input:
                return input_index
        return None

    def accept(self, batch_id: int, items: list, size: int) -> None:
        with self.lock:
            self.seen_batches.add(batch_id)
            self.batches[batch_id] = [len(items), size, False]
            for input_index, _ in items:
                self.batch_of_input[input_index] = batch_id
            self.queue.append((batch_id, items))
            self.pending_bytes += size
            self.submitted += len(items)
        if self.setup_failure is not None:
            self._report_setup_failure()

    def feed(self) -> None:
        """Hand queued batches to the pool while the job has fewer than `share` there."""
        if self.pool_job is None:
            return  # its environment is still being made
        chosen = []
        with self.lock:
            while self.queue and self.batches_in_pool < self.share and self.state == "running":
                batch_id, items = self.queue.popleft()
                self.batches[batch_id][2] = True
                self.batches_in_pool += 1
                chosen.append((batch_id, items))
        # Outside our lock: the pool calls on_pool_event with its own lock held.
        for batch_id, items in chosen:
            self.pool.submit(self.pool_job, batch_id, items)

    def set_share(self, share: int) -> None:
        self.share = max(1, min(share, self.max_slots))
        if self.pool_job is not None:
            self.pool_job.slots = self.share
        self.feed()

    @property
    def queued_inputs(self) -> int:
        return len(self.batch_of_input)

    @property
    def idle(self) -> bool:
        """Nothing queued or running."""
        return not self.batch_of_input

    # --- events (pool reader thread) -------------------------------------------------------

    def on_pool_event(self, event: list) -> None:
        kind, _, data = event
        with self.lock:
            if self.state != "running" and kind != LOGS:
                return  # canceled: only the output its calls wrote before stopping goes on
            if kind == RESULTS:
                for input_index, _ in data:
                    self._settle(input_index)
                self.done += len(data)
            elif kind == ERROR:
                self._settle(data[0])
                self.failed += 1
            self.last_seq += 1
            pieces = encode_frame(self.last_seq, kind, data)
            size = sum(len(piece) for piece in pieces)
            self.log.append((self.last_seq, pieces, size))
            self.log_bytes += size
            wake = not self._wake_pending
            self._wake_pending = True
        if wake:
            self.loop.call_soon_threadsafe(self._on_wake)

    def _settle(self, input_index: int) -> None:
        batch_id = self.batch_of_input.pop(input_index, None)
        if batch_id is None:
            return
        batch = self.batches[batch_id]
        batch[0] -= 1
        if batch[0] == 0:
            del self.batches[batch_id]
            self.pending_bytes -= batch[1]
            if batch[2]:
                self.batches_in_pool -= 1

    def _on_wake(self) -> None:
        with self.lock:
            self._wake_pending = False
        self.changed.set()
        self.feed()
        if self.on_progress is not None:
            self.on_progress(self)

    # --- events (event loop) ---------------------------------------------------------------

    def frames_after(self, seq: int) -> tuple[list, int]:
        """The pieces of the frames with a seq above `seq`, and the last seq they reach."""
        with self.lock:
            log = self.log
            if not log or self.last_seq <= seq:
                return [], seq
            start = max(0, seq + 1 - log[0][0])
            pieces = [piece for _, frame, _ in itertools.islice(log, start, None) for piece in frame]
            return pieces, self.last_seq

    def ack(self, seq: int) -> None:
        with self.lock:
            if seq <= self.acked:
                return
            self.acked = min(seq, self.last_seq)
            log = self.log
            while log and log[0][0] <= self.acked:
                self.log_bytes -= log.popleft()[2]

    # --- ending ----------------------------------------------------------------------------

    def cancel(self) -> None:
        with self.lock:
            if self.state != "running":
                return
            self.state = "canceled"
            self.queue.clear()
        if self.pool_job is not None:
            self.pool.close(self.pool_job)  # cancels what runs; workers return to the pool
        self.changed.set()

    async def wait_stopped(self, timeout: float) -> bool:
        if self.pool_job is None:
            self.state = "stopped"
            return True  # nothing ever ran
        stopped = await asyncio.get_running_loop().run_in_executor(
            None, self.pool.wait_closed, self.pool_job, timeout
        )
        if stopped:
            self.state = "stopped"
        return stopped

    def release(self) -> None:
        """The job is forgotten: let the pool take its workers back."""
        self.cancel()
        on_release, self.on_release = self.on_release, None
        if on_release is not None:
            on_release()
        with self.lock:
            self.log.clear()
            self.log_bytes = 0
            self.pending_bytes = 0

    # --- reporting -------------------------------------------------------------------------

    def status(self) -> dict:
        if self.state == "running":
            state = "done" if (self.sealed and self.idle) else "running"
        else:
            state = self.state
        return {
            "job_id": self.job_id,
            "function_name": self.function_name,
            "state": state,
            "detach": self.detach,
            "sealed": self.sealed,
            "slots": self.share,
            "submitted": self.submitted,
            "done": self.done,
            "failed": self.failed,
            "queued_inputs": self.queued_inputs,
            "last_seq": self.last_seq,
            "acked": self.acked,
            "unacked_bytes": self.log_bytes,
            "streams_open": self.streams_open,
            "created": self.created,
        }
