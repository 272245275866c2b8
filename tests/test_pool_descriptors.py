"""The pool's descriptors: its reader against numbers that changed hands while it waited, and
what a worker the pool let go of leaves open (real pools, real worker processes)."""

from __future__ import annotations

import gc
import os
import sys
import time

import pytest

from burla_core.pool import WorkerPool
from burla_core.stdio_pool import EnvironmentWorkerPool
from burla_core.serialization import dumps_function, dumps_input
from burla_core.types import NOTICE, RESULTS
from tests.test_worker_output import Recorder


def slow_identity(x):
    time.sleep(1.0)
    return x


def test_a_stale_readiness_report_for_a_live_workers_sentinel_is_not_a_death():
    """The reader waits outside the pool's lock on the descriptor numbers it listed before: a
    number closed meanwhile (a stopped worker's) and given to a new worker's sentinel can come
    back ready though that worker is alive. Taking it for a death blamed the running input
    (found by CI: a retried input reported as dying twice, "stopped answering")."""
    pool = WorkerPool()
    recorder = Recorder()
    try:
        job = pool.open_job(dumps_function(slow_identity), 1, recorder)
        pool.submit(job, 0, [(0, dumps_input(0, 7))])
        with pool._lock:
            (worker,) = job.workers
            sentinel = worker.process.sentinel
        with pool._lock:
            pool._handle_ready([sentinel])  # as if `wait` had reported this number ready
        recorder.wait_for(lambda events: any(kind == RESULTS for kind, _, _ in events), "the input's result")
        notices = [data for kind, _, data in recorder.events if kind == NOTICE]
        assert not notices, f"a live worker was taken for a dead one: {notices}"
        assert worker.process.is_alive(), "the worker should still be alive and in the pool"
        pool.close(job)
    finally:
        pool.shutdown()


def _pidfds() -> int:
    count = 0
    for name in os.listdir("/proc/self/fd"):
        try:
            count += os.readlink(f"/proc/self/fd/{name}") == "anon_inode:[pidfd]"
        except OSError:
            pass
    return count


@pytest.mark.skipif(not (sys.platform.startswith("linux") and hasattr(os, "pidfd_open")), reason="pidfds are Linux's")
def test_workers_started_by_a_command_leave_no_descriptor_behind():
    """Each such worker is watched through a pidfd; a node agent starts workers for months, so the
    pidfd must close once the pool has let go of its worker."""
    before = _pidfds()
    for _ in range(3):
        pool = EnvironmentWorkerPool([])
        recorder = Recorder()
        try:
            job = pool.open_job(dumps_function(abs), 2, recorder)
            for index in range(4):
                pool.submit(job, index, [(index, dumps_input(index, -index))])
            recorder.wait_for(lambda events: sum(len(data) for kind, _, data in events if kind == RESULTS) >= 4, "4 results")
            pool.close(job)
        finally:
            pool.shutdown()
        del pool, job, recorder
    gc.collect()
    assert _pidfds() <= before, f"{_pidfds() - before} pidfds of stopped workers are still open"


class _Inbox:
    """A worker's inbox that records which thread wrote each message, and blocks the sender's
    thread on the first one until told (a big function still being written)."""

    def __init__(self) -> None:
        import threading

        self.written: list[tuple[str, bytes]] = []
        self.release = threading.Event()

    def send_bytes(self, data: bytes) -> None:
        import threading

        name = threading.current_thread().name
        if name == "burla-pool-sender" and not self.written:
            self.release.wait(10)
        self.written.append((name, data))


def test_a_small_batch_for_an_idle_worker_is_written_at_once_and_never_overtakes_what_was_posted():
    from burla_core.worker import unpack
    from burla_core.workers import Sender

    sender = Sender()
    class FakeWorker:  # hashable by identity, like the pool's Worker
        def __init__(self) -> None:
            self.inbox = _Inbox()

    idle, loading = FakeWorker(), FakeWorker()
    sender.send(idle, ["batch", 1, 0, [[0, b"x"]]], 1)
    assert [name for name, _ in idle.inbox.written] == ["MainThread"], "a small batch should not wait for the sender thread"
    sender.post(loading, ["job", 1, b"f" * 100, {}])  # held in the sender thread until released
    sender.send(loading, ["batch", 1, 1, [[1, b"y"]]], 1)
    assert loading.inbox.written == [], "the batch must not overtake the job message still being written"
    loading.inbox.release.set()
    deadline = time.monotonic() + 10
    while len(loading.inbox.written) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert [unpack(data)[0] for _, data in loading.inbox.written] == ["job", "batch"]
    sender.send(idle, ["batch", 1, 2, [[2, b"z" * 100_000]]], 100_000)
    deadline = time.monotonic() + 10
    while len(idle.inbox.written) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert idle.inbox.written[1][0] == "burla-pool-sender", "a big batch is written by the sender thread, outside the pool's lock"
    sender.close()
