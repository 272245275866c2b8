"""The caller's side of a job on one node of an engine (a Dask worker, a Ray node): each batch is
one engine task, at most `slots` of them at once, and their frames become the job's events.

    scheduler ─submit(batch)─► waiting ─(fewer than `slots` running)─► launch(task) ─► engine
                                  ▲                                                      │
                                  │ a task the engine lost: its unfinished inputs,        │ frames
                                  │ the one that was running retried once (WORKER_DIED)   ▼
    EventSink ◄── RESULTS / LOGS / ERROR / NOTICE ◄── deliver(task, frame) ◄── the engine's channel

A backend subclasses EngineSession with the engine's three verbs: `launch` a task for a batch,
`stop` running tasks, and `release` what the session holds at the end. It calls `deliver` for
each frame (burla_core.engine.runner's format) and `ended` once a task has really stopped on the
engine (so `is_stopped` tells the truth), with a failure when the engine lost the task.
"""

from __future__ import annotations

import collections
import itertools
import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from ..interfaces import NodeSession
from ..serialization import as_one_pickle
from ..types import ERROR, LOGS, NODE_LOST, NOTICE, RESULTS, WORKER_DIED, ErrorInfo, EventSink, InputBatch

log = logging.getLogger("burla.engine")

_task_numbers = itertools.count(1)


@dataclass(eq=False)
class EngineTask:
    """One batch as one engine task: its inputs not yet settled, in the order they run."""

    task_id: str
    items: dict[int, bytes]
    handle: Any = None  # the engine's future or generator
    started: bool = False  # the engine says it began running (where it can tell)
    stop_requested_at: float | None = None


@dataclass(eq=False)
class _Outgoing:
    """Events of one frame, in order, consecutive ones of a kind merged."""

    events: list[list] = field(default_factory=list)

    def add(self, kind: str, node_id: str, entry: Any) -> None:
        if kind in (RESULTS, LOGS) and self.events and self.events[-1][0] == kind:
            self.events[-1][2].append(entry)
        elif kind in (RESULTS, LOGS):
            self.events.append([kind, node_id, [entry]])
        else:
            self.events.append([kind, node_id, entry])


class EngineSession(NodeSession):
    """One job on one engine node. Thread-safe: frames arrive on the engine's threads."""

    #: After a stop, a task the engine never reported as started counts as stopped after this long.
    UNSTARTED_STOP_SECONDS = 0.5

    #: Tasks launched beyond `capacity()`, for an engine that itself runs at most `capacity()` of
    #: them at once on the node and starts a queued one as soon as a slot frees: the next batch
    #: is already on the node when one ends, instead of a round trip to the caller later. Ray's
    #: raylet starts it on whichever slot frees first; a Dask worker queues it behind its own
    #: running task, so the dask session reads ahead only what `may_read_ahead` allows. 0 for an
    #: engine that would run them at once.
    read_ahead = 0

    #: Each batch is an engine task, whose start and end cost a round trip or two through the
    #: engine (~10 ms): batches shorter than this would spend more than a tenth of it on that.
    min_batch_seconds = 0.1

    #: ...and for the same reason the remaining work is cut whole per slot, not in quarters,
    #: batches grow four times each round, not twice, and up to 2 s of calls, not 1 s: a
    #: 1,000-input job of 10 ms calls on 2 slots starts 16 tasks instead of 49 (27 with halves).
    batch_split = 1
    batch_growth = 4
    max_batch_seconds = 2.0
    #: ...and the end of the job is cut so that each slot ends with one batch, all at once (the
    #: guided end took five tasks on one slot: 78, 39, 20, 10, 9 inputs).
    even_tail = True

    def __init__(self, node_id: str, slots: int, events: EventSink) -> None:
        self.node_id = node_id
        self.slots = slots
        self.events = events
        self._lock = threading.RLock()
        self._waiting: collections.deque[list[tuple[int, bytes]]] = collections.deque()
        self._running: dict[str, EngineTask] = {}
        self._failures: dict[int, int] = {}  # input_index -> engine tasks lost while it ran
        self.canceled = self.closed = self.lost = False

    # --- what a backend implements -------------------------------------------------------

    def launch(self, task: EngineTask) -> None:
        """Start one engine task running `task.items`; set `task.handle`. Frames go to
        `deliver(task, frame)`, the end to `ended(task, failure)`."""
        raise NotImplementedError

    def stop(self, tasks: list[EngineTask]) -> None:
        """Cancel these running tasks on the engine (without blocking); each still ends with
        `ended(task)` once it has really stopped."""
        raise NotImplementedError

    def release(self) -> None:
        """The session is over and nothing of it runs: let go of what it holds."""

    def capacity(self) -> int:
        """How many tasks may run at once now: `slots`, or fewer when part of the node is gone."""
        return self.slots

    def may_read_ahead(self, items: list[tuple[int, bytes]]) -> bool:
        """Whether this batch may be launched as one of the `read_ahead` tasks beyond capacity."""
        return True

    # --- the scheduler's side ------------------------------------------------------------

    def submit(self, batch: InputBatch) -> None:
        with self._lock:
            if self.canceled or self.closed or self.lost:
                return
            # One self-contained pickle per input: the engine ships it with its own serializer.
            self._waiting.append([(index, as_one_pickle(payload)) for index, payload in batch.items])
        self._pump()

    def _pump(self) -> None:
        while True:
            with self._lock:
                if self.canceled or self.closed or self.lost or not self._waiting:
                    return
                running, capacity = len(self._running), self.capacity()
                if running >= capacity and (running >= capacity + self.read_ahead or not self.may_read_ahead(self._waiting[0])):
                    return
                items = self._waiting.popleft()
                task = EngineTask(f"{self.node_id}#{next(_task_numbers)}", dict(items))
                self._running[task.task_id] = task
            try:
                self.launch(task)
            except Exception as error:  # the engine refused the task: as if it lost it
                log.warning("launching a task on %s failed", self.node_id, exc_info=True)
                self.ended(task, f"could not be started on the engine ({type(error).__name__}: {error})")
                continue
            with self._lock:
                # A cancel that came while the task was being launched could not stop it yet.
                late = self.canceled or self.lost
                if late and task.stop_requested_at is None:
                    task.stop_requested_at = time.monotonic()
            if late:
                self.stop([task])

    def cancel(self) -> None:
        with self._lock:
            if self.canceled:
                return
            self.canceled = True
            self._waiting.clear()
            # A task whose inputs have all ended is ending by itself; canceling it then would
            # race its completion (Ray 2.60's driver aborts on that race).
            tasks = [task for task in self._running.values() if task.items]
            now = time.monotonic()
            for task in tasks:
                task.stop_requested_at = now
        if tasks:
            self.stop(tasks)

    def close(self) -> None:
        with self._lock:
            busy = bool(self._running or self._waiting)
            self.closed = True
        if busy:
            self.cancel()
        self._release_if_idle()

    def _release_if_idle(self) -> None:
        """Let go of the session unless a task still ends on the engine (its end releases it:
        see ended)."""
        with self._lock:
            idle = not self._running
        if idle:
            self.release()

    def is_stopped(self) -> bool:
        with self._lock:
            now = time.monotonic()
            for task in list(self._running.values()):
                if not task.started and task.stop_requested_at is not None:
                    if now - task.stop_requested_at > self.UNSTARTED_STOP_SECONDS:
                        # The engine dropped it before it ran; if it had started after all, it
                        # would find itself canceled before running a call.
                        del self._running[task.task_id]
            # A task whose every input has settled runs none of the job's calls: it is only
            # ending (its worker's job closing, the engine noting its end, 5-10 ms). Waiting for
            # that held every finished job's return back; `ended` releases the session after.
            return not any(task.items for task in self._running.values())

    def wait_stopped(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while not self.is_stopped():
            if time.monotonic() > deadline:
                return False
            time.sleep(0.01)
        self._release_if_idle()
        return True

    # --- what the engine reports -----------------------------------------------------------

    def deliver(self, task: EngineTask, frame: list) -> None:
        """One frame of `task`'s events, in the runner's format."""
        node_id = self.node_id
        out = _Outgoing()
        with self._lock:
            if self.lost:
                return
            task.started = True
            items = task.items
            for entry in frame:
                code = entry[0]
                if code == "r":
                    if items.pop(entry[1], None) is not None:
                        out.add(RESULTS, node_id, (entry[1], entry[2]))
                elif code == "l":
                    out.add(LOGS, node_id, (entry[1], entry[2], entry[3]))
                elif code == "e":
                    if items.pop(entry[1], None) is not None:
                        out.add(ERROR, node_id, (entry[1], ErrorInfo.from_wire(entry[2])))
                elif code == "n":
                    out.add(NOTICE, node_id, entry[1])
        for event in out.events:
            self.events.put(event)

    def running_tasks(self) -> list[EngineTask]:
        with self._lock:
            return list(self._running.values())

    def started(self, task: EngineTask) -> None:
        with self._lock:
            task.started = True

    def ended(self, task: EngineTask, failure: str | None = None) -> None:
        """`task` no longer runs on the engine. With `failure`, the engine lost it (its process
        died, it could not be placed): its unfinished inputs run again, the one that was running
        at most once more."""
        with self._lock:
            if self._running.pop(task.task_id, None) is None:
                return
            unfinished = list(task.items.items())
            if self.canceled or self.closed or self.lost or not unfinished:
                stopped = self.closed and not self._running
                requeue = []
            else:
                stopped = False
                if failure is None:
                    failure = "ended without reporting every input"
                requeue = self._after_failure(unfinished, failure)
        if stopped:
            self.release()
        for event in requeue:
            self.events.put(event)
        self._pump()

    def _after_failure(self, unfinished: list[tuple[int, bytes]], failure: str) -> list[list]:
        """Inputs run in batch order, so the first unfinished one was running: it alone counts a
        failure; the others go back to the front of the queue."""
        culprit, payload = unfinished[0]
        rest = unfinished[1:]
        if rest:
            self._waiting.appendleft(rest)
        failures = self._failures.get(culprit, 0) + 1
        self._failures[culprit] = failures
        if failures >= 2:
            how = f"was lost by the engine ({failure})"
            return [[ERROR, self.node_id, (culprit, ErrorInfo(type_name="WorkerDied", message=how, kind=WORKER_DIED, how=how))]]
        self._waiting.appendleft([(culprit, payload)])
        return [[NOTICE, self.node_id, f"input {culprit}: the engine lost the task running it ({failure}); retrying it once"]]

    def report_lost(self, reason: str) -> None:
        """The node left the cluster: the scheduler runs its unfinished inputs elsewhere."""
        with self._lock:
            if self.lost:
                return
            self.lost = True
            self._waiting.clear()
            tasks = list(self._running.values())
            self._running.clear()
        self.events.put([NODE_LOST, self.node_id, reason])
        if tasks:
            try:
                self.stop(tasks)
            except Exception:
                log.warning("stopping the tasks of lost node %s failed", self.node_id, exc_info=True)
