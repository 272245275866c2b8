"""The worker pool's output events: every piece is tagged with the input that wrote it, comes
before that input's result, and survives the worker's death (real pool, real worker processes)."""

from __future__ import annotations

import os
import sys
import threading
import time

from burla_core.pool import WorkerPool
from burla_core.serialization import dumps_function, dumps_input
from burla_core.types import ERROR, LOGS, RESULTS

DEADLINE = 60


class Recorder:
    """A job's sink: every event, in the order the pool produced them."""

    def __init__(self) -> None:
        self.events: list = []
        self.changed = threading.Condition()

    def __call__(self, event: list) -> None:
        with self.changed:
            self.events.append(event)
            self.changed.notify_all()

    def wait_for(self, predicate, what: str) -> None:
        deadline = time.monotonic() + DEADLINE
        with self.changed:
            while not predicate(self.events):
                remaining = deadline - time.monotonic()
                assert remaining > 0, f"timed out waiting for {what}; events so far: {self.events!r}"
                self.changed.wait(min(remaining, 0.1))

    def output(self, stream: int) -> dict[int, str]:
        """Each input's text on `stream`, joined in arrival order."""
        texts: dict[int, str] = {}
        for kind, _, data in self.events:
            if kind == LOGS:
                for input_index, entry_stream, text in data:
                    if entry_stream == stream:
                        texts[input_index] = texts.get(input_index, "") + text
        return texts


def run_on_pool(function, inputs: list, slots: int = 2, finished=None, pool_class=WorkerPool) -> Recorder:
    pool = pool_class()
    recorder = Recorder()
    try:
        job = pool.open_job(dumps_function(function), slots, recorder)
        for input_index, value in enumerate(inputs):
            pool.submit(job, input_index, [(input_index, dumps_input(input_index, value))])
        settled = finished or (lambda events: _settled(events) >= len(inputs))
        recorder.wait_for(settled, f"{len(inputs)} inputs to finish")
        pool.close(job)
    finally:
        pool.shutdown()
    return recorder


def _settled(events: list) -> int:
    return sum(len(data) if kind == RESULTS else 1 for kind, _, data in events if kind in (RESULTS, ERROR))


def write_every_way(i):
    import subprocess

    print(f"print {i}")
    os.write(1, f"fd {i}\n".encode())
    subprocess.run([sys.executable, "-c", f"print('child {i}')"], check=True)
    sys.stderr.write(f"err {i}\n")
    sys.stdout.write(f"unfinished {i}")  # no newline: flushed when the input ends
    return i


def test_every_piece_of_output_is_tagged_with_the_input_that_wrote_it():
    inputs = list(range(6))
    recorder = run_on_pool(write_every_way, inputs)
    out, err = recorder.output(1), recorder.output(2)
    for i in inputs:
        assert out.get(i) == f"print {i}\nfd {i}\nchild {i}\nunfinished {i}", (
            f"input {i}'s stdout (print, os.write(1), a subprocess, an unfinished line) should all be tagged "
            f"with index {i}: got {out.get(i)!r}; all stdout: {out!r}"
        )
        assert err.get(i) == f"err {i}\n", f"input {i}'s stderr: {err.get(i)!r}"


def test_an_inputs_output_comes_before_its_result():
    recorder = run_on_pool(write_every_way, list(range(4)))
    seen_output: set[int] = set()
    for kind, _, data in recorder.events:
        if kind == LOGS:
            seen_output.update(input_index for input_index, stream, text in data if text.startswith("unfinished"))
        elif kind == RESULTS:
            for input_index, _ in data:
                assert input_index in seen_output, f"the result of input {input_index} arrived before its last output"


def print_and_die(i):
    print(f"last words of input {i}", flush=True)
    os.write(2, f"fd 2 before dying, input {i}\n".encode())
    if i == 1:
        os._exit(7)
    return i


def test_output_of_a_dying_worker_goes_to_the_input_that_was_running():
    recorder = run_on_pool(print_and_die, [0, 1, 2], slots=1)
    out, err = recorder.output(1), recorder.output(2)
    assert out.get(1) == "last words of input 1\n" * 2, (
        f"input 1 printed a line and exited, twice (first attempt and retry); both lines belong to it: {out!r}"
    )
    assert err.get(1) == "fd 2 before dying, input 1\n" * 2, f"input 1's stderr: {err!r}"
    assert out.get(0) == "last words of input 0\n" and out.get(2) == "last words of input 2\n", out


def split_character(i):
    sys.stdout.buffer.write("é".encode()[:1])
    sys.stdout.flush()
    time.sleep(0.05)  # the pool may read the first byte alone
    sys.stdout.buffer.write("é".encode()[1:] + b" whole\n")
    sys.stdout.flush()
    return i


def test_a_character_split_between_two_writes_arrives_whole():
    recorder = run_on_pool(split_character, [0])
    assert recorder.output(1).get(0) == "é whole\n", recorder.events


def long_running_chatter(i):
    print(f"early line of input {i}", flush=True)
    time.sleep(30)
    return i


def test_output_is_delivered_while_the_input_still_runs():
    pool = WorkerPool()
    recorder = Recorder()
    try:
        job = pool.open_job(dumps_function(long_running_chatter), 1, recorder)
        pool.submit(job, 0, [(0, dumps_input(0, 0))])
        recorder.wait_for(lambda events: "early line of input 0\n" in recorder.output(1).get(0, ""), "the early line")
        assert not any(kind == RESULTS for kind, _, _ in recorder.events)
        pool.cancel(job)
        pool.close(job)
    finally:
        pool.shutdown()


def fork_while_the_output_lock_is_held(i):
    """A child forked at a moment this worker's output relay holds its lock (as its thread does
    while it sends what it read): the child inherits a copy of the lock, held, and prints."""
    import signal

    relaying_worker_output = sys.stdout._after_flush.__self__  # the test reaches into the worker
    sys.stdout.flush()
    with relaying_worker_output.lock:
        pid = os.fork()
        if pid == 0:
            print(f"line of the child of input {i}", flush=True)
            os._exit(0)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        time.sleep(0.01)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    return "the child hung in print"


def test_a_forked_child_of_a_worker_that_relays_its_own_output_prints_without_hanging():
    """Workers inside an engine (Dask, Ray) or a container read their own output pipes and relay
    what they read. A child the function forks must leave that to its parent: relaying in the
    child would take the inherited copy of the relay's lock (the child hung in print) and send
    through an outbox whose sender thread the child does not have."""
    from burla_core.engine.runner import CleanWorkerPool

    recorder = run_on_pool(fork_while_the_output_lock_is_held, [0, 1], pool_class=CleanWorkerPool)
    results = sorted(entry for kind, _, data in recorder.events if kind == RESULTS for entry in data)
    errors = [data for kind, _, data in recorder.events if kind == ERROR]
    assert not errors, errors
    from burla_core.serialization import loads

    assert [loads(payload) for _, payload in results] == [0, 0], "each forked child should print and exit 0"
    output = recorder.output(1)
    for i in (0, 1):
        assert output.get(i, "").count(f"line of the child of input {i}\n") == 1, output
