"""The pool's reader thread: it waits on every worker's pipes and process sentinel, turns their
messages into job events, hands a worker that finished a batch its next one, notices deaths, and
runs the func_ram and cancel watchdog. A mixin of WorkerPool (pool.py), whose state it shares
under the pool's lock."""

from __future__ import annotations

import os
import sys
import time

from multiprocess import connection as mp_connection

from . import channel
from .channel import decode_result
from .types import ERROR, LOGS, RESULTS, ErrorInfo
from .worker import unpack
from .workers import WATCH_INTERVAL, Worker, _rss_bytes


class PoolReading:
    def _read_loop(self) -> None:
        while not self._closed:
            with self._lock:
                waitables = list(self._live) + list(self._by_sentinel) + list(self._by_output_fd) + [self._wake_r]
            try:
                ready = mp_connection.wait(waitables, timeout=WATCH_INTERVAL)
            except OSError:
                ready = []  # a connection closed under us; loop and rebuild the list
            with self._lock:
                self._handle_ready(ready)
                self._watch()

    def _handle_ready(self, ready: list) -> None:
        """Act on what `wait` found ready. It waited outside the lock, on descriptor numbers taken
        before it: meanwhile another thread may have closed a worker's descriptors and a new
        worker been given the same numbers. So a sentinel counts only if it is ready now: a live
        worker must never be taken for a dead one (its input would be blamed for a death)."""
        for item in ready:
            if item == self._wake_r:
                os.read(self._wake_r, 4096)
            elif isinstance(item, int):
                worker = self._by_output_fd.get(item)
                if worker is not None:
                    piece = worker.output.read(item)  # non-blocking: a stale report reads nothing
                    if piece is not None:
                        self._output(worker, *piece)
                    continue
                worker = self._by_sentinel.get(item)
                if worker is not None and _ready_now(item):
                    self._drain(worker)
                    self._on_death(worker)
            else:
                worker = self._live.get(item)
                if worker is not None:
                    self._drain(worker)  # polls first: a stale report reads nothing

    def _drain(self, worker: Worker) -> None:
        """Handle every message the worker has written so far."""
        connection = worker.outbox
        try:
            while connection.poll():
                self._handle(worker, unpack(connection.recv_bytes()))
        except (EOFError, OSError):
            pass

    def _handle(self, worker: Worker, items: list) -> None:
        results: dict[int, list] = {}
        logs: dict[int, list] = {}
        released = 0
        for item in items:
            kind = item[0]
            job = self._jobs.get(item[1])
            if kind == "r" and type(item[3]) is list:
                # Copied out of the worker's arena now, even for a canceled job: the worker may
                # reuse that memory once told so (below).
                item[3], generation = decode_result(item[3], worker.arenas)
                released = max(released, generation)
            if kind == "s":
                worker.current_index.value = item[2]
                continue
            if kind == "l":
                # Output, even of a canceled job: what was written before the cancel still
                # reaches the caller. Logs go before results: a line printed before `return`
                # must reach the caller before the result.
                self._output(worker, item[1], item[2], item[3], item[4], logs)
                continue
            if job is None or job.canceled:
                if kind == "d":
                    self._batch_done(worker)
                continue
            if kind == "r":
                batch = worker.batch
                if batch is not None:
                    batch.unreported.pop(item[2], None)
                results.setdefault(job.job_key, []).append((item[2], item[3]))
            elif kind == "e":
                batch = worker.batch
                if batch is not None:
                    batch.unreported.pop(item[2], None)
                self._flush_events(results, logs)
                job.sink([ERROR, job.node_id, (item[2], ErrorInfo.from_wire(item[3]))])
            elif kind == "d":
                self._flush_events(results, logs)
                self._batch_done(worker)
        if released:
            worker.arenas.released.value = released
        self._flush_events(results, logs)

    def _output(self, worker: Worker, job_key: int, input_index: int, stream: int, data: bytes, logs: dict | None = None) -> None:
        """Bytes a worker's input wrote to fd 1 or 2, decoded: to `logs` (sent by _flush_events)
        or straight to the job. Output whose job has ended (a process the function started
        and left running) is written to this process's own stream rather than lost."""
        for owner_job, owner_index, text in worker.output.decode(stream, job_key, input_index, data):
            job = self._jobs.get(owner_job)
            if job is None:
                _write_orphan_output(stream, text)
            elif logs is not None:
                logs.setdefault(owner_job, []).append((owner_index, stream, text))
            else:
                job.sink([LOGS, job.node_id, [(owner_index, stream, text)]])

    def _flush_events(self, results: dict, logs: dict) -> None:
        # Logs first: a line printed before `return` must reach the caller before the result.
        for job_key, entries in logs.items():
            job = self._jobs.get(job_key)
            if job is not None:
                job.sink([LOGS, job.node_id, entries])
        for job_key, entries in results.items():
            job = self._jobs.get(job_key)
            if job is not None and not job.canceled:
                job.sink([RESULTS, job.node_id, entries])
        logs.clear()
        results.clear()

    def _watch(self) -> None:
        """Kill workers over their job's func_ram, or ignoring a cancel past its deadline; give
        back the arena pages of workers that moved nothing big for a while."""
        now = time.monotonic()
        for worker in list(self._live.values()):
            arenas = worker.arenas
            if arenas is not None and worker.batch is None and arenas.holds_pages and arenas.idle_for(now) > channel.ARENA_KEEP_SECONDS:
                arenas.give_back_pages()
            if worker.kill_reason is not None:
                continue
            if worker.cancel_deadline is not None and now > worker.cancel_deadline:
                worker.kill_reason = "did not stop when canceled and was killed"
                self._kill(worker)
                continue
            job = worker.job
            if job is None or job.ram_limit_bytes is None or worker.batch is None:
                continue
            resident = _rss_bytes(worker.pid)
            used = None if resident is None else resident - worker.memory_baseline
            if used is not None and used > job.ram_limit_bytes:
                worker.kill_reason = (
                    f"ran out of memory: it used {used / 2**30:.2f} GiB, more than its "
                    f"func_ram of {job.ram_limit_bytes / 2**30:.0f} GiB"
                )
                self._kill(worker)


def _ready_now(sentinel: int) -> bool:
    return bool(mp_connection.wait([sentinel], timeout=0))


def _write_orphan_output(stream: int, text: str) -> None:
    target = sys.stdout if stream == 1 else sys.stderr
    try:
        target.write(text)
        target.flush()
    except (AttributeError, OSError, ValueError):
        pass


