"""Workers that die, and a caller that presses Ctrl-C: never a hang, never a leftover call."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import time

import burla

from conformance_tests._support import (
    ScriptRun,
    call_with_deadline,
    process_state,
    raised_by,
    send_suite_by_value,
    write_text,
)

send_suite_by_value(__name__)

DEADLINE = 90  # seconds a call that loses workers may take before the test calls it a hang


def die(how):
    if how == "exit":
        os._exit(1)
    os.kill(os.getpid(), signal.SIGKILL)
    time.sleep(10)  # not reached: SIGKILL cannot be caught


def die_on_first_attempt(work, how, i):
    """Input 60 kills its worker the first time it runs; its retry finds the marker and returns."""
    if i == 60:
        marker = os.path.join(work, f"died-once-{i}")
        if not os.path.exists(marker):
            write_text(marker, "")
            die(how)
    return i * 10


def always_die(how, i):
    if i == 3:
        die(how)
    return i * 10


def _check_retried(rpm, tmp_path, how):
    work = str(tmp_path)
    count = 200  # several inputs per batch: the dying input's batch-mates must not be lost either
    got = call_with_deadline(
        DEADLINE, f"a call whose worker dies once ({how})", rpm, die_on_first_attempt, [(work, how, i) for i in range(count)]
    )
    assert os.path.exists(os.path.join(work, "died-once-60")), "input 60 never ran its first attempt"
    expected = [i * 10 for i in range(count)]
    wrong = [i for i in range(count) if i >= len(got) or got[i] != expected[i]]
    assert len(got) == count and not wrong, (
        f"input 60 killed its worker ({how}) only on its first attempt; the retry should succeed and every "
        f"input return i * 10. Got {len(got)} results, wrong at inputs {wrong[:10]}"
    )


def _check_worker_died(rpm, how, described):
    error = call_with_deadline(
        DEADLINE, f"a call whose worker always dies ({how})", raised_by, rpm, always_die, [(how, i) for i in range(5)]
    )
    assert isinstance(error, burla.WorkerDied), (
        f"input 3 kills its worker ({how}) on every attempt: expected burla.WorkerDied, got {type(error).__name__}: {error}"
    )
    assert getattr(error, "input_index", None) == 3, f"input_index: {getattr(error, 'input_index', None)!r}"
    assert getattr(error, "burla_input_index", None) == 3, f"burla_input_index: {getattr(error, 'burla_input_index', None)!r}"
    message = str(error)
    assert re.search(r"\b3\b", message), f"the message should name input 3: {message}"
    assert re.search(described, message, re.IGNORECASE), f"the message should say how the worker died ({described}): {message}"


def test_worker_exiting_on_first_attempt_is_retried(rpm, tmp_path):
    _check_retried(rpm, tmp_path, "exit")


def test_worker_sigkilled_on_first_attempt_is_retried(rpm, tmp_path):
    _check_retried(rpm, tmp_path, "sigkill")


def test_worker_exiting_every_attempt_raises_worker_died(rpm):
    _check_worker_died(rpm, "exit", r"exit\w*.*\b1\b|status 1|code 1")


def test_worker_sigkilled_every_attempt_raises_worker_died(rpm):
    _check_worker_died(rpm, "sigkill", r"SIGKILL|signal 9")


def test_next_call_works_after_workers_died(rpm):
    call_with_deadline(DEADLINE, "a call whose worker always dies", raised_by, rpm, always_die, [("exit", i) for i in range(5)])
    call_with_deadline(DEADLINE, "a call whose worker always dies", raised_by, rpm, always_die, [("sigkill", i) for i in range(5)])
    for attempt in range(2):
        got = call_with_deadline(DEADLINE, "a call after worker deaths", rpm, lambda x: x + 1, list(range(40)))
        assert got == list(range(1, 41)), f"call {attempt + 1} after worker deaths returned {got!r}"
    got = call_with_deadline(DEADLINE, "a generator call after worker deaths", lambda: sorted(rpm(abs, [-1, -2, -3], generator=True)))
    assert got == [1, 2, 3], f"a generator call after worker deaths yielded {got!r}"


CTRL_C_SCRIPT = r'''
import json, os, signal, socket, sys, time
import burla

# Behave like an interactive caller even when this test runs where SIGINT is ignored (a
# background job of a non-interactive shell starts with SIGINT ignored, and children inherit it).
signal.signal(signal.SIGINT, signal.default_int_handler)
backend, options, work, call_seconds = json.loads(sys.argv[1])


def sleepy(i):
    with open(os.path.join(work, f"pid-{i}.tmp"), "w") as handle:
        json.dump([socket.gethostname(), os.getpid()], handle)
    os.replace(os.path.join(work, f"pid-{i}.tmp"), os.path.join(work, f"pid-{i}"))
    deadline = time.monotonic() + call_seconds
    while time.monotonic() < deadline:
        with open(os.path.join(work, f"beat-{i}"), "a") as beat:
            beat.write(".")
        time.sleep(0.02)
    with open(os.path.join(work, f"done-{i}"), "w") as handle:
        handle.write("finished")
    return i


def wait_for_exit_permission():
    # Stay alive (like a notebook after an interrupt) so the test can check that the calls
    # stopped because of the Ctrl-C itself, not because this process exited.
    deadline = time.monotonic() + 30
    while not os.path.exists(os.path.join(work, "may-exit")) and time.monotonic() < deadline:
        time.sleep(0.02)


if __name__ == "__main__":
    try:
        burla.remote_parallel_map(sleepy, list(range(6)), backend=backend, backend_options=options)
        outcome = {"raised": None}
    except BaseException as error:
        outcome = {"raised": type(error).__name__, "is_job_canceled": isinstance(error, burla.JobCanceled), "message": str(error)}
        with open(os.path.join(work, "outcome.tmp"), "w") as handle:
            json.dump(outcome, handle)
        os.replace(os.path.join(work, "outcome.tmp"), os.path.join(work, "outcome.json"))
        wait_for_exit_permission()
        raise
    with open(os.path.join(work, "outcome.tmp"), "w") as handle:
        json.dump(outcome, handle)
    os.replace(os.path.join(work, "outcome.tmp"), os.path.join(work, "outcome.json"))
'''


def _files(directory, prefix):
    return sorted(name for name in os.listdir(directory) if name.startswith(prefix) and not name.endswith(".tmp"))


def _beat_sizes(directory):
    return {name: os.path.getsize(os.path.join(directory, name)) for name in _files(directory, "beat-")}


def test_ctrl_c_cancels_the_job_and_stops_every_call(burla_backend, burla_backend_options, tmp_path):
    call_seconds = 3.0
    script = tmp_path / "ctrl_c.py"
    script.write_text(CTRL_C_SCRIPT, encoding="utf-8")
    work = tmp_path / "work"
    work.mkdir()
    outcome_path = work / "outcome.json"
    run = ScriptRun(str(script), json.dumps([burla_backend, burla_backend_options, str(work), call_seconds]))
    try:
        deadline = time.monotonic() + 30
        while not _files(work, "pid-") and time.monotonic() < deadline and run.process.poll() is None:
            time.sleep(0.02)
        assert _files(work, "pid-"), f"no call started within 30 s.\n{run.report()}"
        first_started = time.monotonic()
        time.sleep(0.3)  # let the running calls get going
        os.killpg(run.process.pid, signal.SIGINT)  # what Ctrl-C in a terminal does
        interrupted = time.monotonic()
        while not outcome_path.exists() and time.monotonic() < interrupted + 20 and run.process.poll() is None:
            time.sleep(0.02)
        assert outcome_path.exists(), f"remote_parallel_map did not return within 20 s of Ctrl-C.\n{run.report()}"
        took = time.monotonic() - interrupted
        outcome = json.loads(outcome_path.read_text())
        assert outcome.get("is_job_canceled"), (
            f"Ctrl-C should make remote_parallel_map raise burla.JobCanceled; outcome: {outcome}.\n{run.report()}"
        )
        assert took < 6, f"remote_parallel_map took {took:.1f} s to raise after Ctrl-C; it should stop within a few seconds"

        # The caller is still alive: the calls must have stopped because of the Ctrl-C itself.
        time.sleep(0.3)
        before = _beat_sizes(work)
        time.sleep(0.6)
        after = _beat_sizes(work)
        still_running = sorted(name for name in after if after[name] != before.get(name))
        assert not still_running, f"calls kept running after Ctrl-C: {still_running}"
        time.sleep(max(0.0, first_started + call_seconds + 0.7 - time.monotonic()))
        finished = _files(work, "done-")
        assert not finished, f"calls ran to completion although the job was canceled with Ctrl-C: {finished}"
        here = socket.gethostname()
        for name in _files(work, "pid-"):
            host, pid = json.loads((work / name).read_text())
            beat = work / f"beat-{name.split('-', 1)[1]}"
            if host != here or process_state(pid) != "running" or not beat.exists():
                continue  # gone, or on another machine (the heartbeat check above covers it)
            size = beat.stat().st_size
            time.sleep(0.1)
            assert beat.stat().st_size == size, f"worker process {pid} still runs the canceled call {name} after Ctrl-C"

        (work / "may-exit").write_text("")
        code = run.wait(timeout=20)
        assert code is not None, f"the caller did not exit after JobCanceled was raised.\n{run.report()}"
        assert code != 0 and "JobCanceled" in run.stderr, (
            f"the script should exit with the JobCanceled error (status {code}).\n{run.report()}"
        )
    finally:
        (work / "may-exit").write_text("")
        run.kill()
