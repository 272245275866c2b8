"""generator=True: results as they complete, the first one before the job ends."""

from __future__ import annotations

import os
import time

from conformance_tests._support import call_with_deadline, raised_by, send_suite_by_value, wait_for_path, write_text

send_suite_by_value(__name__)

GATE_SECONDS = 10.0  # a gated call gives up waiting after this long (so nothing can hang)


def gated(work, i, gated_inputs):
    """Return at once, unless `i` is gated: then wait for the test to create go-<i>."""
    if i in gated_inputs:
        wait_for_path(os.path.join(work, f"go-{i}"), GATE_SECONDS)
        write_text(os.path.join(work, f"done-{i}"), "")
    return i * 100


def fail_on_one(x):
    if x == 1:
        raise ValueError("input 1 fails in generator mode")
    return x


def test_generator_true_returns_an_iterator_not_a_list(rpm):
    results = rpm(lambda x: x + 1, [1, 2, 3], generator=True)
    assert not isinstance(results, list), "generator=True should return a generator, not a list"
    assert iter(results) is results, f"generator=True should return an iterator; got {type(results).__name__}"
    got = sorted(results)
    assert got == [2, 3, 4], f"the generator yielded {got!r}, expected 2, 3, 4 in some order"


def test_generator_first_result_arrives_while_later_inputs_still_run(rpm, tmp_path):
    work = str(tmp_path)
    inputs = [(work, 0, (1, 2)), (work, 1, (1, 2)), (work, 2, (1, 2))]
    started = time.monotonic()
    results = rpm(gated, inputs, generator=True)
    first = call_with_deadline(GATE_SECONDS + 20, "the first next() of generator=True", next, results)
    elapsed = time.monotonic() - started
    done = sorted(name for name in os.listdir(work) if name.startswith("done-"))
    try:
        assert first == 0, f"the first result should be input 0's (the only one not held back), got {first!r}"
        assert not done, f"the first result arrived only after the held-back inputs finished ({done})"
        assert elapsed < GATE_SECONDS / 2, (
            f"the first result took {elapsed:.1f} s although input 0 returns at once: results are not streamed"
        )
    finally:
        for i in (1, 2):
            write_text(os.path.join(work, f"go-{i}"), "")
    rest = sorted(call_with_deadline(GATE_SECONDS + 20, "the rest of the generator", list, results))
    assert rest == [100, 200], f"the rest of the generator yielded {rest!r}, expected 100 and 200"


def test_generator_yields_in_completion_order(rpm, tmp_path):
    work = str(tmp_path)
    inputs = [(work, i, (0,)) for i in range(4)]
    results = rpm(gated, inputs, generator=True)
    yielded = []
    try:
        for _ in range(3):
            yielded.append(call_with_deadline(GATE_SECONDS + 20, "next() of generator=True", next, results))
            assert not os.path.exists(os.path.join(work, "done-0")), (
                f"the generator yielded {yielded!r} only after the held-back input 0 gave up waiting "
                f"({GATE_SECONDS:.0f} s): results are not yielded as they complete"
            )
        assert sorted(yielded) == [100, 200, 300], (
            f"input 0 is held back, so inputs 1, 2, 3 must be yielded first; the generator yielded {yielded!r}"
        )
    finally:
        write_text(os.path.join(work, "go-0"), "")
    last = call_with_deadline(GATE_SECONDS + 20, "next() of generator=True", next, results)
    yielded.append(last)
    assert last == 0, f"input 0 completed last, so it should be yielded last; the generator yielded {yielded!r}"
    leftover = call_with_deadline(10, "the end of the generator", list, results)
    assert leftover == [], f"the generator yielded more than one result per input: extra {leftover!r}"


def test_generator_error_raises_during_iteration(rpm):
    results = rpm(fail_on_one, [0, 1, 2], generator=True)
    received = []

    def drain():
        for value in results:
            received.append(value)

    error = raised_by(call_with_deadline, 30, "iterating a failing generator", drain)
    assert type(error) is ValueError, f"expected input 1's ValueError while iterating, got {type(error).__name__}: {error}"
    assert str(error) == "input 1 fails in generator mode", f"message changed: {str(error)!r}"
    assert getattr(error, "burla_input_index", None) == 1, f"burla_input_index: {getattr(error, 'burla_input_index', None)!r}"
    assert 1 not in received, f"the failing input must not be yielded as a result; got {received!r}"
