"""The pool's reader thread against descriptor numbers that changed hands while it waited (real
pool, real worker processes)."""

from __future__ import annotations

import time

from burla_core.pool import WorkerPool
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
