"""How inputs are read: exactly what iterating them yields (whatever len() says), a short or
slow generator spread over the workers at once, and Ctrl-C while the first inputs are read."""

from __future__ import annotations

import json
import os
import signal
import time

from ._support import ScriptRun, max_overlap, read_intervals, record_interval, wait_for_path


class LongerThanItIterates:
    """len() says 100 (like a DataFrame counting rows) but iterating yields 3 items (its columns)."""

    def __len__(self):
        return 100

    def __iter__(self):
        return iter(["a", "b", "c"])


class ShorterThanItIterates:
    def __len__(self):
        return 2

    def __iter__(self):
        return iter(range(7))


def test_results_are_what_iterating_the_inputs_yields_whatever_len_says(rpm):
    got = rpm(str.upper, LongerThanItIterates(), spinner=False)
    assert got == ["A", "B", "C"], f"len() said 100 but iteration gave 3 inputs; results were {got!r}"
    got = rpm(abs, ShorterThanItIterates(), spinner=False)
    assert got == list(range(7)), f"len() said 2 but iteration gave 7 inputs; results were {got!r}"
    streamed = sorted(rpm(str.upper, LongerThanItIterates(), spinner=False, generator=True))
    assert streamed == ["A", "B", "C"], streamed


def test_a_short_generator_spreads_over_the_workers(rpm, tmp_path):
    directory = str(tmp_path)
    inputs = ((directory, f"g{i}", 0.6) for i in range(4))  # a generator: no len()
    rpm(record_interval, inputs, spinner=False, func_ram=1)
    intervals = read_intervals(directory)
    assert len(intervals) == 4, intervals
    assert max_overlap(intervals) >= 2, (
        "the 4 inputs of a generator ran one after another: they were sent to one worker in a batch "
        "instead of spread over the workers"
    )


def test_a_slow_source_does_not_hold_back_the_first_call(rpm, tmp_path):
    """The first call must start while the source still waits (for that call to create a file)."""
    started_path = str(tmp_path / "first-call-started")

    def source():
        yield started_path
        if not wait_for_path(started_path, 30):
            yield "the first call did not start while the source was still being read"
        for _ in range(3):
            yield None

    def mark(path):
        if path is None or not path.startswith(os.sep):
            return path
        with open(path, "w") as handle:
            handle.write("started")
        return "ok"

    results = rpm(mark, source(), spinner=False, func_ram=1)
    assert results == ["ok", None, None, None], results


CTRL_C_WHILE_READING = r'''
import json, os, signal, sys, time
backend, options, work = json.loads(sys.argv[1])
import burla

# Behave like an interactive caller even where SIGINT is ignored (a background job of a
# non-interactive shell starts with SIGINT ignored, and its children inherit that).
signal.signal(signal.SIGINT, signal.default_int_handler)

def inputs():
    yield 1
    with open(os.path.join(work, "reading"), "w"):
        pass
    time.sleep(120)  # a source that blocks: Ctrl-C comes while it is being read
    yield 2

outcome = {}
try:
    burla.remote_parallel_map(abs, inputs(), spinner=False, backend=backend, backend_options=options, func_ram=1)
except BaseException as error:
    outcome = {"type": type(error).__name__, "is_job_canceled": isinstance(error, burla.JobCanceled)}
with open(os.path.join(work, "outcome.tmp"), "w") as handle:
    json.dump(outcome, handle)
os.replace(os.path.join(work, "outcome.tmp"), os.path.join(work, "outcome.json"))  # never seen half-written
'''


def test_ctrl_c_while_the_first_inputs_are_read_is_job_canceled(burla_backend, burla_backend_options, tmp_path):
    script = tmp_path / "reading.py"
    script.write_text(CTRL_C_WHILE_READING, encoding="utf-8")
    work = tmp_path / "work"
    work.mkdir()
    run = ScriptRun(str(script), json.dumps([burla_backend, burla_backend_options, str(work)]))
    try:
        assert wait_for_path(str(work / "reading"), 60), f"the source was never read.\n{run.report()}"
        time.sleep(0.2)
        os.killpg(run.process.pid, signal.SIGINT)
        assert wait_for_path(str(work / "outcome.json"), 20), f"no outcome within 20 s of Ctrl-C.\n{run.report()}"
        outcome = json.loads((work / "outcome.json").read_text())
        assert outcome.get("is_job_canceled"), f"Ctrl-C while reading inputs raised {outcome}, not JobCanceled.\n{run.report()}"
    finally:
        run.kill()
