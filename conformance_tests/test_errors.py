"""The function's exceptions, and everything that cannot be pickled or is too big."""

from __future__ import annotations

import os
import re
import threading
import time

import burla

from conformance_tests._support import (
    call_with_deadline,
    raised_by,
    remote_traceback_texts,
    send_suite_by_value,
    wait_for_path,
    write_text,
)

send_suite_by_value(__name__)

THIS_FILE = os.path.basename(__file__)


class CustomConformanceError(Exception):
    """An exception class defined by the caller, with an attribute of its own."""

    def __init__(self, message, details=None):
        super().__init__(message)
        self.details = details


class ErrorHoldingALock(Exception):
    """Cannot be pickled: it holds a lock."""

    def __init__(self, message):
        super().__init__(message)
        self.lock = threading.Lock()


class ErrorNeedingTwoArguments(Exception):
    """Pickles, but cannot be unpickled: pickle re-creates it with one argument."""

    def __init__(self, code, detail):
        super().__init__(f"code {code}: {detail}")
        self.code = code


class ErrorWithBrokenStr(Exception):
    """Its __str__ raises: printing it fails, raising and pickling it does not."""

    def __str__(self):
        raise RuntimeError("__str__ is broken")


def raise_error_with_broken_str(x):
    if x == 1:
        raise ErrorWithBrokenStr("the real problem")
    return x


def fail_on_three(x):
    if x == 3:
        raise ValueError(f"input {x} is not allowed")
    return x


def raise_builtin(kind):
    if kind == "zero":
        return 1 / 0
    if kind == "key":
        return {}["missing-key"]
    if kind == "type":
        return len(5)
    return kind


def conformance_user_helper_that_raises(x):
    raise RuntimeError(f"raised deep in user code for {x}")


def conformance_user_entry_point(x):
    if x == 2:
        return conformance_user_helper_that_raises(x)
    return x


def raise_custom(x):
    if x == 1:
        raise CustomConformanceError("custom failure 1", details={"input": x, "why": "testing"})
    return x


def raise_error_holding_a_lock(x):
    if x == 2:
        raise ErrorHoldingALock("cannot travel 2")
    return x


def raise_error_needing_two_arguments(x):
    if x == 0:
        raise ErrorNeedingTwoArguments(7, "needs two arguments")
    return x


def return_a_lock_for_one(x):
    return threading.Lock() if x == 1 else x


def length_or_value(x):
    return len(x) if isinstance(x, bytes) else x


def test_error_reraised_with_original_type_message_and_input_index(rpm):
    error = raised_by(rpm, fail_on_three, list(range(6)))
    assert type(error) is ValueError, f"expected the function's ValueError, got {type(error).__name__}: {error}"
    assert str(error) == "input 3 is not allowed", f"the message changed on the way: {str(error)!r}"
    assert getattr(error, "burla_input_index", None) == 3, (
        f"burla_input_index should be 3 (the failing input), got {getattr(error, 'burla_input_index', None)!r}"
    )


def test_builtin_exception_types_are_preserved(rpm):
    for kind, expected_type, expected_args in (
        ("zero", ZeroDivisionError, ("division by zero",)),
        ("key", KeyError, ("missing-key",)),
        ("type", TypeError, None),
    ):
        error = raised_by(rpm, raise_builtin, ["fine", kind])
        assert type(error) is expected_type, (
            f"input {kind!r} raises {expected_type.__name__} in the function; the caller got "
            f"{type(error).__name__}: {error}"
        )
        if expected_args is not None:
            assert error.args == expected_args, f"{expected_type.__name__} args changed: {error.args!r}"
        assert getattr(error, "burla_input_index", None) == 1, (
            f"{expected_type.__name__}: burla_input_index should be 1, got {getattr(error, 'burla_input_index', None)!r}"
        )


def test_remote_traceback_shows_user_frames_not_burla_internals(rpm):
    error = raised_by(rpm, conformance_user_entry_point, [0, 1, 2, 3])
    assert type(error) is RuntimeError, f"expected RuntimeError, got {type(error).__name__}: {error}"
    texts = remote_traceback_texts(error)
    assert texts, "the error carries no remote traceback: neither burla_traceback nor a chained __cause__"
    combined = "\n".join(texts)
    for needle in ("conformance_user_entry_point", "conformance_user_helper_that_raises", THIS_FILE):
        assert needle in combined, f"the remote traceback should show {needle!r} (the user's frames); it is:\n{combined}"
    for internal in ("burla_core", "worker.py"):
        assert internal not in combined, (
            f"the remote traceback should hide Burla's own frames, but mentions {internal!r}:\n{combined}"
        )


def test_custom_exception_class_keeps_its_type_and_attributes(rpm):
    error = raised_by(rpm, raise_custom, [0, 1, 2])
    assert type(error) is CustomConformanceError, (
        f"expected the test module's CustomConformanceError, got {type(error).__module__}.{type(error).__qualname__}: {error}"
    )
    assert str(error) == "custom failure 1", f"message changed: {str(error)!r}"
    assert error.details == {"input": 1, "why": "testing"}, f"its attribute `details` came back as {error.details!r}"
    assert getattr(error, "burla_input_index", None) == 1, f"burla_input_index: {getattr(error, 'burla_input_index', None)!r}"


def test_unpicklable_exception_arrives_as_remote_exception(rpm):
    error = raised_by(rpm, raise_error_holding_a_lock, [0, 1, 2])
    assert isinstance(error, burla.RemoteException), (
        f"an exception that cannot be pickled should arrive as burla.RemoteException, got {type(error).__name__}: {error}"
    )
    assert "ErrorHoldingALock" in error.type_name, f"type_name should name ErrorHoldingALock, is {error.type_name!r}"
    assert error.original_message == "cannot travel 2", f"original_message is {error.original_message!r}"
    assert "raise_error_holding_a_lock" in error.traceback_text, (
        f"traceback_text should show the function's frame:\n{error.traceback_text}"
    )
    assert getattr(error, "burla_input_index", None) == 2, f"burla_input_index: {getattr(error, 'burla_input_index', None)!r}"


def test_exception_whose_init_needs_other_arguments_keeps_its_type_and_attributes(rpm):
    error = raised_by(rpm, raise_error_needing_two_arguments, [0, 1])
    assert type(error) is ErrorNeedingTwoArguments, (
        "an exception whose __init__ takes other arguments than it passes to Exception (so pickle cannot "
        f"re-create it) should still come back as its own type; got {type(error).__module__}.{type(error).__qualname__}: {error}"
    )
    assert str(error) == "code 7: needs two arguments", f"message changed: {str(error)!r}"
    assert getattr(error, "code", None) == 7, f"its attribute `code` came back as {getattr(error, 'code', None)!r}"
    assert getattr(error, "burla_input_index", None) == 0, f"burla_input_index: {getattr(error, 'burla_input_index', None)!r}"
    assert any("raise_error_needing_two_arguments" in text for text in remote_traceback_texts(error)), (
        f"the remote traceback should show the function's frame: {remote_traceback_texts(error)!r}"
    )


def test_exception_whose_str_raises_reaches_the_caller_as_itself(rpm):
    error = call_with_deadline(60, "a call raising an exception whose __str__ fails", raised_by, rpm, raise_error_with_broken_str, [0, 1])
    assert type(error) is ErrorWithBrokenStr, (
        "the function raised an exception whose __str__ itself raises; the caller should get that exception, "
        f"not {type(error).__module__}.{type(error).__qualname__}: {error!r}"
    )
    assert error.args == ("the real problem",), f"its args came back as {error.args!r}"
    assert getattr(error, "burla_input_index", None) == 1, f"burla_input_index: {getattr(error, 'burla_input_index', None)!r}"


def test_error_cancels_the_rest_of_the_job(rpm, tmp_path):
    work = str(tmp_path)
    # Long enough that no other call can finish before input 0 fails, even when the worker that
    # runs input 1 (which input 0 waits for) takes a while to start on a busy machine.
    call_seconds = 4.0

    def fail_fast_or_work_slowly(i):
        if i == 0:
            wait_for_path(os.path.join(work, "started-1"), 10)
            raise ValueError("input 0 fails")
        write_text(os.path.join(work, f"started-{i}"), "")
        deadline = time.monotonic() + call_seconds
        while time.monotonic() < deadline:
            with open(os.path.join(work, f"beat-{i}"), "a") as beat:
                beat.write(".")
            time.sleep(0.02)
        write_text(os.path.join(work, f"done-{i}"), "")
        return i

    started = time.monotonic()
    error = raised_by(rpm, fail_fast_or_work_slowly, list(range(8)))
    assert type(error) is ValueError, f"expected input 0's ValueError, got {type(error).__name__}: {error}"
    time.sleep(0.3)
    before = _beat_sizes(work)
    time.sleep(0.4)
    after = _beat_sizes(work)
    still_running = sorted(name for name in after if after[name] != before.get(name))
    assert not still_running, f"calls kept running after the job's error was raised: {still_running}"
    time.sleep(max(0.0, started + call_seconds + 0.5 - time.monotonic()))
    finished = sorted(name for name in os.listdir(work) if name.startswith("done-"))
    assert not finished, f"after input 0 failed, the rest of the job should be canceled, but these finished: {finished}"


def _beat_sizes(directory):
    return {name: os.path.getsize(os.path.join(directory, name)) for name in os.listdir(directory) if name.startswith("beat-")}


def test_function_too_big_raises_before_anything_runs(rpm, tmp_path):
    marker = str(tmp_path / "ran")
    captured = bytes(110 * 1000 * 1000)  # over 100 MB, and over 100 MiB

    def carries_too_much(x):
        write_text(marker, "")
        return len(captured) + x

    error = raised_by(rpm, carries_too_much, [1, 2])
    assert isinstance(error, burla.FunctionTooBig), f"expected burla.FunctionTooBig, got {type(error).__name__}: {error}"
    assert "100" in str(error), f"the message should state the 100 MB limit: {error}"
    time.sleep(0.2)
    assert not os.path.exists(marker), "the function ran although it was too big to send"


def test_input_too_big_names_the_input(rpm):
    big = bytes(215 * 1000 * 1000)  # over 200 MB, and over 200 MiB
    error = raised_by(rpm, length_or_value, [1, big, 3])
    del big
    assert isinstance(error, burla.InputTooBig), f"expected burla.InputTooBig, got {type(error).__name__}: {error}"
    assert getattr(error, "burla_input_index", None) == 1, f"burla_input_index: {getattr(error, 'burla_input_index', None)!r}"
    assert getattr(error, "input_index", None) == 1, f"input_index: {getattr(error, 'input_index', None)!r}"
    assert "200" in str(error), f"the message should state the 200 MB limit: {error}"


def test_unpicklable_function_names_what_failed(rpm, tmp_path):
    marker = str(tmp_path / "ran")
    guard = threading.Lock()

    def uses_a_captured_lock(x):
        write_text(marker, "")
        with guard:
            return x

    error = raised_by(rpm, uses_a_captured_lock, [1])
    assert isinstance(error, burla.UnpicklableFunction), (
        f"a function capturing a threading.Lock should raise burla.UnpicklableFunction, got {type(error).__name__}: {error}"
    )
    message = str(error)
    assert "uses_a_captured_lock" in message, f"the message should name the function: {message}"
    assert "lock" in message.lower(), f"the message should say the lock is what cannot be pickled: {message}"
    assert not os.path.exists(marker), "the function ran although it cannot be pickled"


def test_unpicklable_input_names_the_input(rpm):
    error = raised_by(rpm, length_or_value, [1, 2, threading.Lock(), 4])
    assert isinstance(error, burla.UnpicklableInput), f"expected burla.UnpicklableInput, got {type(error).__name__}: {error}"
    assert getattr(error, "input_index", None) == 2, f"input_index: {getattr(error, 'input_index', None)!r}"
    assert getattr(error, "burla_input_index", None) == 2, f"burla_input_index: {getattr(error, 'burla_input_index', None)!r}"
    assert re.search(r"\b2\b", str(error)), f"the message should name input 2: {error}"


def test_unpicklable_result_names_the_input(rpm):
    error = raised_by(rpm, return_a_lock_for_one, [0, 1, 2])
    assert isinstance(error, burla.UnpicklableResult), f"expected burla.UnpicklableResult, got {type(error).__name__}: {error}"
    assert getattr(error, "input_index", None) == 1, f"input_index: {getattr(error, 'input_index', None)!r}"
    assert getattr(error, "burla_input_index", None) == 1, f"burla_input_index: {getattr(error, 'burla_input_index', None)!r}"
    assert re.search(r"\b1\b", str(error)), f"the message should name input 1: {error}"


def test_burla_exports_the_documented_errors():
    for name in (
        "FunctionTooBig",
        "InputTooBig",
        "InvalidArgument",
        "JobCanceled",
        "RemoteException",
        "UnknownBackend",
        "UnknownGPU",
        "UnpicklableFunction",
        "UnpicklableInput",
        "UnpicklableResult",
        "WorkerDied",
    ):
        error_type = getattr(burla, name, None)
        assert isinstance(error_type, type) and issubclass(error_type, Exception), f"burla.{name} should be an exception class"
        assert issubclass(error_type, burla.BurlaError), f"burla.{name} should derive from burla.BurlaError"


def inputs_that_fail_after_two():
    yield 1
    yield 2
    raise LookupError("the inputs iterator failed")


def test_error_raised_by_the_inputs_iterator_reaches_the_caller(rpm):
    error = raised_by(rpm, abs, inputs_that_fail_after_two())
    assert type(error) is LookupError, (
        f"the inputs generator raised LookupError; the caller should get it, got {type(error).__name__}: {error}"
    )
    assert str(error) == "the inputs iterator failed", f"message changed: {str(error)!r}"


def test_returned_exception_objects_are_results_not_raised(rpm):
    got = rpm(lambda x: ValueError(f"returned {x}"), [1, 2])
    assert [type(value) for value in got] == [ValueError, ValueError], f"results: {got!r}"
    assert [str(value) for value in got] == ["returned 1", "returned 2"], f"results: {got!r}"


def interrupts_itself(x):
    raise KeyboardInterrupt(f"raised by the function for input {x}")


def test_keyboard_interrupt_raised_by_the_function_is_its_error_not_a_cancel(rpm):
    try:
        rpm(interrupts_itself, [4])
    except burla.JobCanceled as error:
        raise AssertionError(f"the function's own KeyboardInterrupt became JobCanceled: {error}") from error
    except KeyboardInterrupt as error:
        assert error.burla_input_index == 0, "the interrupt must carry the index of the input that raised it"
        assert "input 4" in str(error)
    else:
        raise AssertionError("the function's KeyboardInterrupt was not raised in the caller")
