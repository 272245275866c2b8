"""detach=True on the local backend: the job runs in a process of its own, its state lives in the
job store, and the caller behaves like a normal call (or lets go without stopping the job)."""

from __future__ import annotations

import json
import os
import pickle
import signal
import subprocess
import sys
import textwrap
import threading
import time
import types
from pathlib import Path

import pytest

from burla import JobCanceled, NodeDisconnected, UnpicklableInput, remote_parallel_map
from burla_core.jobstore import CANCELED, DONE, FAILED, RUNNING, JobStore, RunnerLost
from burla_core.processes import process_alive

WAIT_SECONDS = 30.0


@pytest.fixture(autouse=True)
def isolated_data_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("BURLA_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("BURLA_CONFIG", str(tmp_path / "config.json"))
    monkeypatch.delenv("BURLA_BACKEND", raising=False)
    return tmp_path / "data"


def wait_for(condition, what: str, timeout: float = WAIT_SECONDS):
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(0.05)


def only_job(store: JobStore):
    jobs = store.list_jobs()
    return jobs[0] if len(jobs) == 1 else None


def job_progressed(store: JobStore):
    """The job, once it runs and has at least one result."""
    record = only_job(store)
    return record if record is not None and record.status == RUNNING and record.done >= 1 else None


def finished_job(store: JobStore, job_id: str):
    record = store.check_alive(store.get(job_id))
    return record if record.finished else None


def burla_cli(*args: str, timeout: float = WAIT_SECONDS) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "burla_cli.main", *args], capture_output=True, text=True, timeout=timeout
    )


def start_caller_script(tmp_path: Path, body: str) -> subprocess.Popen:
    script = tmp_path / "caller.py"
    script.write_text(textwrap.dedent(body))
    return subprocess.Popen(
        [sys.executable, str(script)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path
    )


SLOW_CALLER = """
    import signal, time
    from burla import remote_parallel_map

    # Ctrl-C reaches it even where SIGINT is ignored (a background job of a non-interactive shell).
    signal.signal(signal.SIGINT, signal.default_int_handler)

    def slow_square(x):
        time.sleep(0.25)
        print("squared", x, flush=True)
        return x * x

    print(remote_parallel_map(slow_square, list(range(12)), detach=True))
"""


def square(x):
    return x * x


def add(a, b):
    return a + b


def shout(x):
    print(f"out {x}")
    print(f"err {x}", file=sys.stderr)
    return x


def fail_on_three(x):
    if x == 3:
        raise ValueError(f"input {x} is bad")
    return x


def sleepy(x):
    time.sleep(0.3)
    return x


def test_detached_call_returns_the_same_results_as_a_normal_call():
    inputs = list(range(25))
    assert remote_parallel_map(square, inputs, detach=True) == remote_parallel_map(square, inputs)
    assert remote_parallel_map(add, [(1, 2), (3, 4)], detach=True) == [3, 7]
    assert remote_parallel_map(lambda x: -x, [1, 2, 3], detach=True) == [-1, -2, -3]
    store = JobStore()
    assert [record.status for record in store.list_jobs()] == [DONE, DONE, DONE]


def test_detached_generator_yields_every_result_as_it_completes():
    results = remote_parallel_map(square, range(10), detach=True, generator=True)
    assert isinstance(results, types.GeneratorType)
    assert sorted(results) == [x * x for x in range(10)]


def test_detached_call_streams_the_function_output_to_the_caller(capfd):
    assert remote_parallel_map(shout, [0, 1, 2], detach=True) == [0, 1, 2]
    captured = capfd.readouterr()
    for x in range(3):
        assert f"out {x}\n" in captured.out, captured
        assert f"err {x}\n" in captured.err, captured
    assert "out" not in captured.err and "err " not in captured.out


def test_detached_error_is_raised_with_its_type_and_input_index():
    with pytest.raises(ValueError, match="input 3 is bad") as raised:
        remote_parallel_map(fail_on_three, range(8), detach=True, max_parallelism=1)
    assert raised.value.burla_input_index == 3
    record = JobStore().list_jobs()[0]
    assert record.status == FAILED and record.error_index == 3
    shown = burla_cli("jobs", "results", record.job_id)
    assert shown.returncode != 0
    assert "ValueError: input 3 is bad" in shown.stderr, shown.stderr


def test_unpicklable_input_fails_in_the_caller_and_leaves_no_job():
    with pytest.raises(UnpicklableInput) as raised:
        remote_parallel_map(square, [1, threading.Lock(), 3], detach=True)
    assert raised.value.burla_input_index == 1
    assert JobStore().list_jobs() == []


def test_job_finishes_after_its_caller_is_killed(tmp_path):
    caller = start_caller_script(tmp_path, SLOW_CALLER)
    store = JobStore()
    try:
        record = wait_for(lambda: job_progressed(store), "the detached job to start producing results")
    finally:
        caller.kill()
        caller.communicate(timeout=WAIT_SECONDS)
    assert caller.returncode == -signal.SIGKILL
    assert record.done < 12, "the job finished before the caller was killed; the test proves nothing"

    finished = wait_for(lambda: finished_job(store, record.job_id), "the job to finish without its caller")
    assert finished.status == DONE, finished.error
    expected = [x * x for x in range(12)]
    assert [pickle.loads(payload) for _, payload in store.iter_results(record.job_id)] == expected

    shown = burla_cli("jobs", "results", record.job_id)
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.splitlines() == [repr(value) for value in expected]
    as_json = burla_cli("jobs", "results", record.job_id, "--json")
    assert json.loads(as_json.stdout) == expected
    logs = burla_cli("jobs", "logs", record.job_id)
    assert sorted(logs.stdout.splitlines()) == sorted(f"squared {x}" for x in range(12))


def test_ctrl_c_in_the_caller_leaves_the_job_running(tmp_path):
    caller = start_caller_script(tmp_path, SLOW_CALLER)
    store = JobStore()
    try:
        record = wait_for(lambda: job_progressed(store), "the detached job to start producing results")
        caller.send_signal(signal.SIGINT)
        _, stderr = caller.communicate(timeout=WAIT_SECONDS)
    finally:
        caller.kill()
    assert "KeyboardInterrupt" in stderr, stderr
    assert f"detached job {record.job_id} keeps running" in stderr, stderr
    assert f"burla jobs logs {record.job_id}" in stderr and f"burla jobs results {record.job_id}" in stderr
    assert store.get(record.job_id).status == RUNNING, "Ctrl-C in the caller must not stop a detached job"

    finished = wait_for(lambda: finished_job(store, record.job_id), "the job to finish after Ctrl-C in its caller")
    assert finished.status == DONE and finished.done == 12


def test_logs_follow_prints_until_the_job_ends(tmp_path):
    caller = start_caller_script(tmp_path, SLOW_CALLER)
    store = JobStore()
    try:
        record = wait_for(lambda: job_progressed(store), "the detached job to start producing results")
        followed = burla_cli("jobs", "logs", record.job_id, "--follow")
        caller.communicate(timeout=WAIT_SECONDS)
    finally:
        caller.kill()
    assert followed.returncode == 0, followed.stderr
    assert sorted(followed.stdout.splitlines()) == sorted(f"squared {x}" for x in range(12))
    assert f"job {record.job_id} done (12/12 done)" in followed.stderr


def test_burla_jobs_cancel_stops_a_running_job():
    results = remote_parallel_map(sleepy, range(40), detach=True, generator=True)
    store = JobStore()
    record = wait_for(lambda: job_progressed(store), "the detached job to start producing results")

    canceled = burla_cli("jobs", "cancel", record.job_id)
    assert canceled.returncode == 0, canceled.stderr
    assert f"job {record.job_id} canceled" in canceled.stdout
    after = store.get(record.job_id)
    assert after.status == CANCELED and after.done < 40
    wait_for(lambda: not process_alive(after.runner_pid, after.job_id), "the canceled job's runner to exit", 10)
    with pytest.raises(JobCanceled):
        list(results)
    again = burla_cli("jobs", "cancel", record.job_id)
    assert again.returncode != 0 and "not running" in again.stderr


def test_a_killed_runner_fails_the_job_instead_of_hanging():
    results = remote_parallel_map(sleepy, range(40), detach=True, generator=True)
    store = JobStore()
    record = wait_for(lambda: job_progressed(store), "the detached job to start producing results")
    os.kill(record.runner_pid, signal.SIGKILL)
    with pytest.raises(NodeDisconnected, match="stopped before the job ended") as raised:
        list(results)
    assert isinstance(raised.value, RunnerLost)
    assert store.get(record.job_id).status == FAILED


def test_closing_a_detached_generator_early_leaves_the_job_running(capfd):
    results = remote_parallel_map(sleepy, range(40), detach=True, generator=True)
    assert next(results) in range(40)
    results.close()
    store = JobStore()
    record = only_job(store)
    assert store.check_alive(record).status == RUNNING
    assert f"detached job {record.job_id} keeps running" in capfd.readouterr().err
    assert burla_cli("jobs", "cancel", record.job_id).returncode == 0


def test_a_second_cancel_stops_a_runner_stuck_before_its_job_starts(tmp_path, monkeypatch):
    """A runner stuck where it cannot see the cancel (here: asking a node that accepts the
    connection and never answers for its health) ignores the first `burla jobs cancel`; a second
    one, later, stops it, and the job ends canceled."""
    import socket

    from burla_core import plugins
    from burla_core.api import prepare_job
    from burla_core.detach import caller_python_path, start_runner
    from burla_core.serialization import dumps_input

    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(16)  # connections are accepted by the kernel; nobody ever answers
    url = f"http://127.0.0.1:{silent.getsockname()[1]}"
    monkeypatch.setenv("BURLA_NODE_TOKEN", "stuck-runner-token-0123456789")
    try:
        job, records, total, inputs = prepare_job(
            abs, [1, 2, 3], 1, 1, None, None, False, None, True,
            backend="nodes", backend_options={"nodes": url, "health_timeout": "600"},
        )
        store = JobStore()
        store.create_job(job, "nodes", total, os.getcwd(), caller_python_path())
        store.add_inputs(job.job_id, ((index, dumps_input(index, value)) for index, value in inputs))
        runner = start_runner(store, job.job_id, caller_python_path())
        wait_for(lambda: store.get(job.job_id).status == RUNNING, "the runner to claim the job")
        first = burla_cli("jobs", "cancel", job.job_id, "--timeout", "2")
        assert first.returncode != 0 and "again" in first.stderr, first.stderr
        assert runner.poll() is None, "the stuck runner was expected to ignore the first cancel"
        time.sleep(5.5)  # a second cancel this long after the first means: stop by force
        second = burla_cli("jobs", "cancel", job.job_id, "--timeout", "10")
        assert second.returncode == 0, second.stderr
        assert store.get(job.job_id).status == CANCELED
        runner.wait(10)
    finally:
        silent.close()
        plugins.reset_registry()
