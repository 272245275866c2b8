"""Workers started by a command (an environment-synced node's, an engine's) share with their pool
the number of the input they run: a worker that dies takes the blame to the right input, whether
or not the results before it had reached the pool (real pool, real worker processes)."""

from __future__ import annotations

import ctypes
import os
import signal

import pytest

from burla_core.serialization import dumps_function, dumps_input
from burla_core.stdio_pool import EnvironmentWorkerPool
from burla_core.types import ERROR, NOTICE, RESULTS
from tests.test_worker_output import Recorder


def kill_on_two(x):
    if x == 2:
        os.kill(os.getpid(), signal.SIGKILL)
    return x


def _run(pool) -> Recorder:
    recorder = Recorder()
    try:
        job = pool.open_job(dumps_function(kill_on_two), 1, recorder)
        pool.submit(job, 0, [(index, dumps_input(index, index)) for index in range(5)])
        recorder.wait_for(lambda events: any(kind == ERROR for kind, _, _ in events)
                          and sum(len(data) for kind, _, data in events if kind == RESULTS) >= 4, "4 results and an error")
        pool.close(job)
    finally:
        pool.shutdown()
    return recorder


def _check(recorder: Recorder) -> None:
    notices = [data for kind, _, data in recorder.events if kind == NOTICE]
    errors = [data for kind, _, data in recorder.events if kind == ERROR]
    results = sorted(index for kind, _, data in recorder.events if kind == RESULTS for index, _ in data)
    assert results == [0, 1, 3, 4], f"every input but the one that kills its worker returns: {results}"
    assert notices and all(text.startswith("input 2:") for text in notices), f"input 2 is to blame: {notices}"
    assert [index for index, _ in errors] == [2], f"input 2 dies twice and fails alone: {errors}"


@pytest.mark.skipif(not hasattr(os, "memfd_create"), reason="shared memory for such workers is Linux's")
def test_a_worker_started_by_a_command_shares_the_input_it_runs_with_its_pool():
    pool = EnvironmentWorkerPool([])
    recorder = Recorder()
    try:
        job = pool.open_job(dumps_function(abs), 1, recorder)
        pool.submit(job, 0, [(0, dumps_input(0, -1))])
        recorder.wait_for(lambda events: any(kind == RESULTS for kind, _, _ in events), "a result")
        (worker,) = pool._live.values()
        assert isinstance(worker.current_index, ctypes.c_longlong), "its input index should be in shared memory"
        messages = []
        handle = pool._handle
        pool._handle = lambda w, items: (messages.extend(item[0] for item in items), handle(w, items))[1]
        pool.submit(job, 1, [(1, dumps_input(1, -2))])
        recorder.wait_for(lambda events: sum(kind == RESULTS for kind, _, _ in events) >= 2, "the second result")
        assert "s" not in messages, f"no start report per input is needed any more: {messages}"
        pool.close(job)
    finally:
        pool.shutdown()


def test_a_worker_started_by_a_command_that_dies_blames_the_input_it_ran():
    _check(_run(EnvironmentWorkerPool([])))


def test_without_shared_memory_the_start_reports_blame_the_same_input(monkeypatch):
    from burla_core import stdio_pool

    monkeypatch.setattr(stdio_pool.SharedIndex, "create", classmethod(lambda cls: None))
    _check(_run(EnvironmentWorkerPool([])))
