"""The engine's side of one batch: run it in this process's pool of Burla workers and produce
frames of events as they happen, for the engine to carry back to the caller.

    engine task (Dask task / Ray streaming task)
        └── run_batch(function, items) ──► WorkerPool (clean worker processes, kept warm here)
                 ▲                               │ RESULTS / LOGS / ERROR / NOTICE
                 └── frames ◄── coalesced ◄──────┘      (a worker that dies: its input retried
                                                         once on a new worker, then WORKER_DIED)

A frame is a list of plain entries (msgpack-able, for Dask's event channel as for Ray's objects):
    ["r", input_index, pickled_result]   ["l", input_index, stream, text]
    ["e", input_index, ErrorInfo.to_wire()]   ["n", text]
Every input of the batch ends as one "r" or one "e" unless `stop_requested()` turns true: then
the calls are canceled, what they printed until they stopped is still sent, and run_batch returns
only once none of them runs any more.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from typing import Callable, Iterator


from ..pool import CANCEL_GRACE_SECONDS, ProcessPool
from ..serialization import as_one_pickle
from ..stdio_pool import StdioWorkerPool
from ..types import ERROR, LOGS, NOTICE, RESULTS

POLL_SECONDS = 0.05  # how often a running batch checks whether the engine canceled it
FRAME_SECONDS = 0.05  # events this close together travel in one frame (see _Inbox)
MAX_FRAME_BYTES = 4 * 1000 * 1000
STOP_SECONDS = CANCEL_GRACE_SECONDS + 4.0  # after a cancel: the pool kills a call within its grace


class CleanWorkerPool(StdioWorkerPool):
    """A WorkerPool whose workers are fresh interpreters (`python -m burla_core.engine.worker`)
    instead of forks of this engine process (a forked child of a Ray worker hangs on its first
    Ray call). They see this process's sys.path (a Ray working_dir, files a Dask client
    uploaded) and its current directory, and exit when this process does."""

    def command(self, gpu_index: int | None, name: str) -> list[str]:
        return [sys.executable, "-m", "burla_core.engine.worker", str(os.getpid())]

    def environment(self, gpu_index: int | None) -> dict | None:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(path for path in sys.path if path and os.path.isdir(path))
        if gpu_index is not None:
            env["CUDA_VISIBLE_DEVICES"] = str(gpu_index)
        return env


_engine_pool = ProcessPool(CleanWorkerPool)


def engine_pool() -> CleanWorkerPool:
    """This engine process's pool (one per process; a forked child makes its own)."""
    return _engine_pool.get()


def _entries(event: list) -> list[list]:
    """The frame entries of one pool event."""
    kind, data = event[0], event[2]
    if kind == RESULTS:
        return [["r", input_index, as_one_pickle(payload)] for input_index, payload in data]
    if kind == LOGS:
        return [["l", input_index, stream, text] for input_index, stream, text in data]
    if kind == ERROR:
        input_index, info = data
        return [["e", input_index, info.to_wire()]]
    if kind == NOTICE:
        return [["n", data]]
    return []


def _size(entry: list) -> int:
    last = entry[-1]
    return len(last) if isinstance(last, (bytes, str)) else 256


class _Inbox:
    """The pool's events of one batch, for the task's thread. The pool's reader thread adds them
    one by one; the task's thread wakes once per frame, not once per event: at the first event
    of a frame, then at FRAME_SECONDS or earlier when the batch is complete (its end is its
    task's) or MAX_FRAME_BYTES are waiting. Every wake-up of an engine's process takes CPU from
    the calls on the same machine."""

    def __init__(self, input_indexes) -> None:
        self._lock = threading.Lock()
        self._events: list[list] = []
        self._bytes = 0
        self._left = set(input_indexes)  # inputs not yet ended, as the reader thread sees them
        self.arrived = threading.Event()  # an event is waiting
        self.urgent = threading.Event()  # ...and the frame should go now

    def put(self, event: list) -> None:
        kind, data = event[0], event[2]
        if kind == RESULTS:
            size = 0
            for input_index, payload in data:
                self._left.discard(input_index)
                size += len(payload)
        elif kind == ERROR:
            self._left.discard(data[0])
            size = 256
        elif kind == LOGS:
            size = sum(len(text) for _, _, text in data)
        else:
            size = 256
        with self._lock:
            first = not self._events
            self._events.append(event)
            self._bytes += size
            urgent = self.complete() or self._bytes >= MAX_FRAME_BYTES
        if first:
            self.arrived.set()
        if urgent:
            self.urgent.set()

    def take(self) -> list[list]:
        with self._lock:
            events, self._events, self._bytes = self._events, [], 0
            self.arrived.clear()
            self.urgent.clear()
        return events

    def empty(self) -> bool:
        with self._lock:
            return not self._events

    def complete(self) -> bool:
        """Every input of the batch has ended (its end may still be waiting here)."""
        return not self._left


def _frames(events: list[list]) -> Iterator[list[list]]:
    """The events as frames of at most about MAX_FRAME_BYTES each."""
    frame: list[list] = []
    size = 0
    for event in events:
        for entry in _entries(event):
            frame.append(entry)
            size += _size(entry)
        if size >= MAX_FRAME_BYTES:
            yield frame
            frame, size = [], 0
    if frame:
        yield frame


def run_batch(
    function_bytes: bytes,
    items: list[tuple[int, bytes]],
    stop_requested: Callable[[], bool],
    env: dict[str, str] | None = None,
    ram_limit_bytes: int | None = None,
) -> Iterator[list[list]]:
    """Run `items` ((input_index, pickled args) pairs) one after another on one worker of this
    process's pool; yield frames as events arrive. Returns once every input has ended, or after
    `stop_requested()` once the calls have stopped."""
    pool = engine_pool()
    inbox = _Inbox(input_index for input_index, _ in items)
    job = pool.open_job(function_bytes, 1, inbox.put, node_id="engine", env=env, ram_limit_bytes=ram_limit_bytes)
    stopping_since: float | None = None
    try:
        if stop_requested():
            return
        pool.submit(job, 0, [(input_index, bytes(payload)) for input_index, payload in items])
        while True:
            if inbox.arrived.wait(POLL_SECONDS):
                inbox.urgent.wait(FRAME_SECONDS)
                yield from _frames(inbox.take())
            if inbox.complete() and inbox.empty():
                return
            if stopping_since is None and stop_requested():
                stopping_since = time.monotonic()
                pool.cancel(job)
            if stopping_since is not None and inbox.empty():
                if pool.is_stopped(job) or time.monotonic() - stopping_since > STOP_SECONDS:
                    return
    finally:
        pool.close(job)
        pool.wait_closed(job, STOP_SECONDS)
