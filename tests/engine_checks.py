"""What the engine backends (dask, ray) must do beyond the conformance suite. Not collected on
its own: tests/test_dask_backend.py and tests/test_ray_backend.py run it in the same pytest run
as the conformance suite (`--burla-backend dask|ray`), so that both share one local cluster.

Impossible requests fail at once and say what the cluster has (never a task pending forever);
an engine worker process that dies under a call is retried once, then WorkerDied; grow= says
once that it has no effect; the function's output reaches the caller, not the engine's logs.
"""

from __future__ import annotations

import os
import signal
import time

import burla

from conformance_tests._support import call_with_deadline, raised_by, send_suite_by_value, write_text

send_suite_by_value(__name__)

AT_ONCE_SECONDS = 30  # an impossible request must fail well before this (it never waits on the engine)


def _fails_at_once(rpm, what, **kwargs):
    started = time.monotonic()
    error = call_with_deadline(AT_ONCE_SECONDS + 30, what, raised_by, rpm, abs, [1, 2], **kwargs)
    took = time.monotonic() - started
    assert isinstance(error, burla.NoCompatibleNodes), f"{what}: expected NoCompatibleNodes, got {type(error).__name__}: {error}"
    assert took < AT_ONCE_SECONDS, f"{what}: NoCompatibleNodes came after {took:.0f} s; it must not wait on the engine"
    return str(error)


def test_more_cpus_than_any_node_has_fails_at_once_saying_what_the_nodes_have(rpm, burla_backend):
    message = _fails_at_once(rpm, "func_cpu=64", func_cpu=64)
    assert "func_cpu=64" in message, f"the message should repeat the request: {message}"
    has = "thread(s)" if burla_backend == "dask" else "CPU(s)"
    assert has in message, f"the message should say how many {has} the nodes have: {message}"


def test_more_ram_than_any_node_has_fails_at_once(rpm, burla_backend):
    message = _fails_at_once(rpm, "func_ram=100000", func_ram=100_000)
    assert "func_ram=100000" in message, f"the message should repeat the request: {message}"
    assert "GiB" in message, f"the message should say how much memory the nodes have: {message}"


def test_a_gpu_no_node_has_fails_at_once_naming_the_gpu(rpm):
    message = _fails_at_once(rpm, "func_gpu='A100'", func_gpu="A100")
    assert "A100" in message and "no GPU" in message, f"the message should name the GPU asked for and what the nodes have: {message}"


def test_an_image_no_node_declares_fails_at_once_saying_how_nodes_declare_one(rpm):
    message = _fails_at_once(rpm, "image='python:3.11'", image="python:3.11")
    assert "BURLA_IMAGE" in message and "python:3.11" in message, f"the message should say how a node declares its image: {message}"


def test_grow_says_once_that_it_has_no_effect(rpm, burla_backend, capfd):
    capfd.readouterr()
    assert rpm(abs, [-1], grow=True) == [1]
    assert rpm(abs, [-2], grow=True) == [2]
    err = capfd.readouterr().err
    notices = [line for line in err.splitlines() if "grow= has no effect" in line]
    assert len(notices) == 1 and burla_backend in notices[0], f"expected one notice naming the backend, got: {notices}"


def print_a_line(i):
    print(f"engine output {i}")
    return i


def test_output_reaches_the_caller_once_without_engine_decoration(rpm, capfd):
    capfd.readouterr()
    assert rpm(print_a_line, list(range(4))) == [0, 1, 2, 3]
    captured = capfd.readouterr()
    lines = sorted(line for line in captured.out.splitlines() if line)
    assert lines == [f"engine output {i}" for i in range(4)], (
        f"stdout should hold exactly the function's lines (no pid prefixes, no engine logs): {captured.out!r}"
    )
    assert "engine output" not in captured.err, f"the function's stdout leaked to stderr: {captured.err!r}"


def kill_the_engine_worker_once(work, i):
    """Input 3 kills the engine's own worker process (the parent of Burla's worker) once."""
    marker = os.path.join(work, "killed-once")
    if i == 3 and not os.path.exists(marker):
        write_text(marker, "")
        os.kill(os.getppid(), signal.SIGKILL)
        time.sleep(30)  # killed with it (Burla's worker exits when its parent does)
    return i * 2


def kill_the_engine_worker_always(i):
    if i == 2:
        os.kill(os.getppid(), signal.SIGKILL)
        time.sleep(30)
    return i


def test_an_engine_worker_that_dies_once_is_retried(rpm, tmp_path):
    got = call_with_deadline(
        120, "a call whose engine worker dies once", rpm, kill_the_engine_worker_once, [(str(tmp_path), i) for i in range(8)]
    )
    assert os.path.exists(tmp_path / "killed-once"), "input 3 never ran its first attempt"
    assert got == [i * 2 for i in range(8)], f"every input should return i * 2 after the retry, got {got!r}"


def test_an_engine_worker_that_dies_every_time_raises_worker_died(rpm):
    error = call_with_deadline(120, "a call whose engine worker always dies", raised_by, rpm, kill_the_engine_worker_always, list(range(4)))
    assert isinstance(error, burla.WorkerDied), f"expected burla.WorkerDied, got {type(error).__name__}: {error}"
    assert error.input_index == 2, f"the error should name input 2, got {error.input_index!r}: {error}"
    assert "engine" in str(error), f"the message should say the engine lost the task: {error}"
    got = call_with_deadline(120, "a call after engine workers died", rpm, abs, [-1, -2, -3])
    assert got == [1, 2, 3], f"the next call should work again, got {got!r}"


def test_an_engine_worker_dying_leaves_stdout_to_the_function(rpm, tmp_path, capfd):
    capfd.readouterr()
    call_with_deadline(120, "a call whose engine worker dies once", rpm, kill_the_engine_worker_once, [(str(tmp_path), 3)])
    time.sleep(2)  # engines report a dead worker asynchronously
    out = capfd.readouterr().out
    assert out.strip() == "", f"the engine wrote to the caller's stdout about its dead worker: {out!r}"


def test_the_dask_scheduler_keeps_no_events_of_a_finished_job(rpm, burla_backend, burla_backend_options):
    if burla_backend != "dask":
        import pytest

        pytest.skip("Dask's scheduler keeps events per topic; Ray's frames are task yields")
    from burla_backend_dask.client import dask_client
    from burla_backend_dask.settings import DaskSettings

    client = dask_client(DaskSettings.from_options(burla_backend_options))

    def burla_topics(dask_scheduler):
        return sorted(name for name in dask_scheduler._broker._topics if name.startswith("burla-"))

    before = set(client.run_on_scheduler(burla_topics))  # other tests' killed callers may have left some
    assert rpm(print_a_line, [1, 2]) == [1, 2]
    left = set(client.run_on_scheduler(burla_topics)) - before
    assert not left, f"the job's event topic outlived the job on the scheduler: {left}"


def triple_and_say(x):
    print(f"detached {x}")
    return x * 3


def test_a_detached_job_runs_on_the_engine(rpm, capfd):
    capfd.readouterr()
    got = call_with_deadline(120, "a detached call", rpm, triple_and_say, [1, 2, 3], detach=True)
    assert got == [3, 6, 9], f"the detached job's results came back as {got!r}"
    out = capfd.readouterr().out
    assert sorted(line for line in out.splitlines() if line) == ["detached 1", "detached 2", "detached 3"], out
