"""How many calls run at once, and calls that run beside or inside each other."""

from __future__ import annotations

import threading
import time

from conformance_tests._support import (
    call_with_deadline,
    max_overlap,
    read_intervals,
    record_interval,
    send_suite_by_value,
)

send_suite_by_value(__name__)

CALL_SECONDS = 0.4


def tagged(tag, x):
    return (tag, x * x)


def _check_cap(rpm, tmp_path, cap, count):
    # Untimed first: an engine starts its worker processes when a job first needs them (Ray takes
    # seconds on a busy machine, and meanwhile runs the queued calls on the workers it has), so
    # the calls measured below find `cap` workers up, and the count tests the cap, not a start.
    call_with_deadline(60, "a first call that starts the workers", rpm, time.sleep, [0.3] * (2 * cap), max_parallelism=cap)
    work = str(tmp_path)
    inputs = [(work, f"input-{i:03d}", CALL_SECONDS) for i in range(count)]
    got = call_with_deadline(60, f"a call with max_parallelism={cap}", rpm, record_interval, inputs, max_parallelism=cap)
    assert got == [key for _, key, _ in inputs], f"results with max_parallelism={cap} came back as {got!r}"
    intervals = read_intervals(work)
    assert len(intervals) == count, f"{count} calls should each record their interval; found {len(intervals)}"
    most = max_overlap(intervals)
    spans = [(round(s - intervals[0][0], 3), round(e - intervals[0][0], 3), f"pid {pid}") for s, e, pid in intervals]
    assert most == cap, (
        f"max_parallelism={cap} with {count} calls of {CALL_SECONDS} s: at most {most} ran at once, expected "
        f"exactly {cap}. Intervals (s) and the worker of each: {spans}"
    )


def test_max_parallelism_one_runs_calls_one_at_a_time(rpm, tmp_path):
    _check_cap(rpm, tmp_path, cap=1, count=4)


def test_max_parallelism_two_runs_exactly_two_at_a_time(rpm, tmp_path):
    _check_cap(rpm, tmp_path, cap=2, count=6)


def test_two_threads_can_call_at_the_same_time(rpm):
    barrier = threading.Barrier(2)
    outcomes: dict = {}

    def caller(tag):
        try:
            barrier.wait(10)
            outcomes[tag] = rpm(tagged, [(tag, x) for x in range(30)])
        except BaseException as error:  # reported below
            outcomes[tag] = error

    threads = [threading.Thread(target=caller, args=(tag,), daemon=True) for tag in ("left", "right")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not any(thread.is_alive() for thread in threads), "two concurrent calls from two threads hang"
    for tag in ("left", "right"):
        got = outcomes.get(tag)
        assert not isinstance(got, BaseException), f"the call from thread {tag!r} raised {type(got).__name__}: {got}"
        expected = [(tag, x * x) for x in range(30)]
        assert got == expected, f"the call from thread {tag!r} returned {got!r}, expected {expected!r}"


def test_interleaved_generator_calls_do_not_mix(rpm):
    first = rpm(lambda x: ("first", x), list(range(12)), generator=True)
    second = rpm(lambda x: ("second", -x), list(range(12)), generator=True)
    got_first, got_second = [], []

    def alternate():
        for pair in zip(first, second):
            got_first.append(pair[0])
            got_second.append(pair[1])

    call_with_deadline(60, "two interleaved generator calls", alternate)
    assert sorted(got_first) == [("first", x) for x in range(12)], f"the first call yielded {sorted(got_first)!r}"
    assert sorted(got_second) == sorted(("second", -x) for x in range(12)), f"the second call yielded {sorted(got_second)!r}"


def test_repeated_calls_in_one_process_keep_results_and_output_apart(rpm, capfd):
    capfd.readouterr()
    for round_number, tag in enumerate(["alpha", "beta", "alpha", "gamma", "beta"]):

        def speak(x, tag=tag, round_number=round_number):
            print(f"{tag}-round{round_number}-input{x}")
            return f"{tag}:{round_number}:{x}"

        got = rpm(speak, list(range(6)))
        expected = [f"{tag}:{round_number}:{x}" for x in range(6)]
        assert got == expected, f"round {round_number} ({tag}) returned {got!r}, expected {expected!r}"
        lines = [line for line in capfd.readouterr().out.splitlines() if line]
        expected_lines = sorted(f"{tag}-round{round_number}-input{x}" for x in range(6))
        assert sorted(lines) == expected_lines, (
            f"round {round_number} ({tag}) printed {lines!r} to stdout; expected exactly {expected_lines!r} "
            "(no output of other calls, nothing missing)"
        )


def test_nested_remote_parallel_map_inside_the_function(rpm):
    inner_call = rpm  # bound to the same backend and options

    def outer(x):
        return sum(inner_call(lambda y: y * x, [1, 2, 3]))

    got = call_with_deadline(120, "a remote_parallel_map inside the function", rpm, outer, [1, 2, 10])
    assert got == [6, 12, 60], f"nested calls returned {got!r}, expected [6, 12, 60]"


def test_nested_call_output_reaches_the_caller(rpm, capfd):
    inner_call = rpm

    def outer(x):
        def inner(y):
            print(f"inner output {x}-{y}")
            return y

        return inner_call(inner, [0, 1])

    capfd.readouterr()
    got = call_with_deadline(120, "a remote_parallel_map inside the function", rpm, outer, [7])
    assert got == [[0, 1]], f"the nested call returned {got!r}, expected [[0, 1]]"
    out = capfd.readouterr().out
    for y in (0, 1):
        assert f"inner output 7-{y}" in out, f"output printed by the inner call should reach the caller's stdout:\n{out}"

