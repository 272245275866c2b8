"""Bad arguments fail at once, before anything runs, with an error that names the problem."""

from __future__ import annotations

import os
import time

import burla

from conformance_tests._support import raised_by, send_suite_by_value, write_text

send_suite_by_value(__name__)


def _marking_function(marker):
    def mark(x):
        write_text(marker, "")
        return x

    return mark


def _expect_invalid(rpm, tmp_path, expected_type, parameter_words, inputs=(1, 2), **arguments):
    marker = str(tmp_path / "ran")
    started = time.monotonic()
    inputs = list(inputs) if isinstance(inputs, tuple) else inputs
    error = raised_by(rpm, _marking_function(marker), inputs, **arguments)
    elapsed = time.monotonic() - started
    assert isinstance(error, expected_type), (
        f"{arguments or inputs!r} should raise burla.{expected_type.__name__}, got {type(error).__name__}: {error}"
    )
    message = str(error)
    for word in parameter_words:
        assert word in message, f"the error for {arguments or inputs!r} should mention {word!r}: {message!r}"
    time.sleep(0.1)
    assert not os.path.exists(marker), f"the function ran although {arguments or inputs!r} is invalid"
    assert elapsed < 10, f"rejecting {arguments or inputs!r} took {elapsed:.1f} s: it should fail before starting work"
    return error


def test_func_cpu_zero_is_invalid_argument(rpm, tmp_path):
    _expect_invalid(rpm, tmp_path, burla.InvalidArgument, ["func_cpu", "0"], func_cpu=0)


def test_func_ram_not_a_number_is_invalid_argument(rpm, tmp_path):
    _expect_invalid(rpm, tmp_path, burla.InvalidArgument, ["func_ram", "'x'"], func_ram="x")


def test_max_parallelism_zero_is_invalid_argument(rpm, tmp_path):
    _expect_invalid(rpm, tmp_path, burla.InvalidArgument, ["max_parallelism", "0"], max_parallelism=0)


def test_unknown_gpu_raises_unknown_gpu_listing_valid_names(rpm, tmp_path):
    error = _expect_invalid(rpm, tmp_path, burla.UnknownGPU, ["T4", "A100", "A100_80G", "H100"], func_gpu="T4")
    assert isinstance(error, burla.InvalidArgument), "burla.UnknownGPU should also be a burla.InvalidArgument"


def test_string_inputs_are_invalid_argument(rpm, tmp_path):
    _expect_invalid(rpm, tmp_path, burla.InvalidArgument, ["inputs"], inputs="abc")


def test_unknown_backend_lists_installed_backends(burla_backend):
    marker_calls = []
    error = raised_by(burla.remote_parallel_map, marker_calls.append, [1], backend="no-such-backend-for-conformance")
    assert isinstance(error, burla.UnknownBackend), f"expected burla.UnknownBackend, got {type(error).__name__}: {error}"
    message = str(error)
    assert "no-such-backend-for-conformance" in message, f"the message should repeat the unknown name: {message!r}"
    assert burla_backend in message, f"the message should list the installed backends, {burla_backend!r} among them: {message!r}"


def test_non_iterable_inputs_are_invalid_argument(rpm, tmp_path):
    _expect_invalid(rpm, tmp_path, burla.InvalidArgument, ["inputs"], inputs=None)


def test_non_callable_function_is_invalid_argument(rpm):
    error = raised_by(rpm, "not a function", [1, 2])
    assert isinstance(error, burla.InvalidArgument), (
        f"a function_ that is not callable should raise burla.InvalidArgument, got {type(error).__name__}: {error}"
    )
    assert "callable" in str(error), f"the message should say function_ must be callable: {error}"
