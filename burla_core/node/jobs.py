"""One job on a node: its queued inputs and its event log.

    POST batch ──► queue (bounded by the agent) ──take_batch (when the node admits one)──► pool
                                                                                             │ sink
    GET events ◄── frames after `after=` ◄── log: seq 1, 2, 3, ... ◄── RESULTS/LOGS/ERROR/NOTICE
                      POST ack ──► drops frames the caller has ─┘

The agent hands a job's batches to the pool one at a time, when the node has room for one more
of its calls (capacity.py), so that all jobs together never run more calls than fit; a job's
queued inputs wait here, where the agent counts their bytes for back-pressure. Events are
numbered and kept, encoded once, until the caller acknowledges them: a stream that drops is
replayed from the last frame the caller has, so nothing is lost and nothing is sent twice.

The pool calls `on_pool_event` from its reader thread; everything else runs on the agent's event
loop. `lock` guards what both touch.
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import threading
import time
from dataclasses import dataclass
from typing import Callable

from ..pool import PoolJob, WorkerPool
from ..serialization import error_info
from ..types import ERROR, JOB_SETUP_FAILED, LOGS, NODE_STATUS, NOTICE, RESULTS
from .frames import encode_frame
from .protocol import JobRequest

RUNNING, CANCELED, STOPPED = "running", "canceled", "stopped"


@dataclass(eq=False)
class QueuedBatch:
    """A batch of a job on this node, from its upload until its last input settles."""

    batch_id: int
    items: list
    size: int  # payload bytes, counted for back-pressure until the batch settles
    unsettled: int
    in_pool: bool = False


class AgentJob:
    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        request: JobRequest,
        function_digest: str,
        max_slots: int,
        gpu_indices: list[int],
    ) -> None:
        self.loop = loop
        self.job_id = request.job_id
        self.function_name = request.function_name
        self.function_digest = function_digest
        self.max_slots = max(1, max_slots)
        self.func_cpu = request.func_cpu
        self.func_ram = request.func_ram
        self.func_gpu = request.func_gpu
        self.gpu_indices = gpu_indices
        self.parent_job = request.parent_job
        self.nested_env = request.nested_env
        self.function = request.function
        # Set once the job's environment is ready (job_setup.py) and its pool job opened.
        self.pool: WorkerPool | None = None
        self.pool_job: PoolJob | None = None
        self.setup_task: asyncio.Task | None = None
        self.setup_failure: BaseException | None = None
        self.on_release: Callable[[], None] | None = None  # once, when the job is forgotten
        # Called on the event loop once `count` of this job's batches left the pool (settled):
        # the agent gives their room back and admits the next batches.
        self.on_batches_settled: Callable[["AgentJob", int], None] | None = None
        self.created = time.time()
        self.lock = threading.Lock()
        # inputs
        self.queue: collections.deque[QueuedBatch] = collections.deque()
        self.batches: dict[int, QueuedBatch] = {}
        self.batch_of_input: dict[int, int] = {}
        self.seen_batches: set[int] = set()
        self.batches_in_pool = 0  # each holds one worker: one call at a time
        self._settled_in_pool = 0  # batches that left the pool since the loop last looked
        self.pending_bytes = 0
        self.submitted = self.done = self.failed = 0
        self.state = RUNNING
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
        self.last_contact = time.monotonic()  # the caller's last request (its lease)

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
            batch = QueuedBatch(batch_id, items, size, unsettled=len(items))
            self.seen_batches.add(batch_id)
            self.batches[batch_id] = batch
            for input_index, _ in items:
                self.batch_of_input[input_index] = batch_id
            self.queue.append(batch)
            self.pending_bytes += size
            self.submitted += len(items)
        if self.setup_failure is not None:
            self._report_setup_failure()

    # --- the job's environment (job_setup.py; any thread) -----------------------------------

    def notice(self, text: str) -> None:
        """A line for the caller's console."""
        self.on_pool_event([NOTICE, None, text])

    def show_status(self, text: str) -> None:
        """What this node is doing for the job, for the caller's progress line ("" clears it)."""
        self.on_pool_event([NODE_STATUS, None, text])

    def fail_setup(self, error: BaseException) -> None:
        """Its environment could not be made: the job fails with `error` on its first input
        (now, or when one arrives), before any input runs here."""
        self.setup_failure = error
        self._report_setup_failure()

    def _report_setup_failure(self) -> None:
        """Every input the job holds here fails with the setup error (none can run here)."""
        if self.state != RUNNING or self.setup_failure is None:
            return
        info = error_info(self.setup_failure, 0, kind=JOB_SETUP_FAILED)
        with self.lock:
            held = list(self.batch_of_input)
            self.queue.clear()
        for input_index in held:
            self.on_pool_event([ERROR, None, (input_index, info)])

    def started(self, pool: WorkerPool, pool_job: PoolJob) -> None:
        """Its environment is ready: its calls run in `pool` from now on."""
        self.pool, self.pool_job = pool, pool_job

    def wants_slot(self) -> bool:
        return (
            self.pool_job is not None and self.state == RUNNING and bool(self.queue) and self.batches_in_pool < self.max_slots
        )

    def take_batch(self) -> QueuedBatch:
        """The next queued batch, now counted as in the pool (the node admitted one more call)."""
        with self.lock:
            batch = self.queue.popleft()
            batch.in_pool = True
            self.batches_in_pool += 1
            # The pool starts workers for this job only up to the batches it holds.
            self.pool_job.slots = max(1, self.batches_in_pool)
            return batch

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
            if self.state != RUNNING and kind != LOGS:
                return  # canceled: only the output its calls wrote before stopping goes on
            if kind == RESULTS:
                for input_index, _ in data:
                    self._settle(input_index)
                self.done += len(data)
            elif kind == ERROR:
                self._settle(data[0])
                self.failed += 1
                data = (data[0], data[1].to_wire())
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
        batch.unsettled -= 1
        if batch.unsettled == 0:
            del self.batches[batch_id]
            self.pending_bytes -= batch.size
            if batch.in_pool:
                self.batches_in_pool -= 1
                self._settled_in_pool += 1

    def _on_wake(self) -> None:
        with self.lock:
            self._wake_pending = False
            settled, self._settled_in_pool = self._settled_in_pool, 0
        self.changed.set()
        if self.on_batches_settled is not None:
            self.on_batches_settled(self, settled)

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

    def mark_canceled(self) -> int:
        """No more inputs run: drop the queue. Returns the room the agent still owes back, once
        the pool has stopped the job's calls: the batches still in the pool, and those that left
        it since the event loop last looked (their wake-up, now, finds nothing to give back; not
        counting them here leaked their room, and the node ran fewer calls from then on)."""
        with self.lock:
            if self.state == RUNNING:
                self.state = CANCELED
                self.queue.clear()
            owed = self.batches_in_pool + self._settled_in_pool
            self.batches_in_pool = 0
            self._settled_in_pool = 0
        self.changed.set()
        return owed

    def forget_events(self) -> None:
        with self.lock:
            self.log.clear()
            self.log_bytes = 0
            self.pending_bytes = 0

    # --- reporting -------------------------------------------------------------------------

    def status(self) -> dict:
        return {
            "job_id": self.job_id,
            "function_name": self.function_name,
            "state": self.state,
            "slots": self.max_slots,
            "running": self.batches_in_pool,
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
