"""What comes back: results, their order, and every kind of callable and input the API accepts."""

from __future__ import annotations

import collections
import functools
import hashlib
import inspect
import time

from conformance_tests._support import send_suite_by_value

send_suite_by_value(__name__)


def square(x):
    return x * x


def power(base, exponent):
    return base**exponent


def collect_args(*args):
    return args


Exponentiation = collections.namedtuple("Exponentiation", "base exponent")


class TaggedPair(tuple):
    """A tuple subclass that is not a namedtuple."""


async def async_square(x):
    import asyncio

    await asyncio.sleep(0.001)
    return x * x


async def async_raise(x):
    import asyncio

    await asyncio.sleep(0.001)
    raise LookupError(f"async failure {x}")


def returns_nothing(x):
    pass


def none_for_odd(x):
    return None if x % 2 else x


def identity_with_jitter(x):
    if x % 97 == 0:
        time.sleep(0.01)
    return x


def earlier_inputs_finish_later(x):
    time.sleep(0.4 if x == 0 else 0.0)
    return x * 10


def filled_bytes(size):
    return bytes([size % 251]) * size


def digest(data):
    return len(data), hashlib.sha256(data).hexdigest()


class Multiplier:
    """A callable object: its state (factor) travels with it."""

    def __init__(self, factor):
        self.factor = factor

    def __call__(self, x):
        return x * self.factor


class Point:
    """A class defined in the test module, returned as a result."""

    def __init__(self, x, y):
        self.x = x
        self.y = y

    def __eq__(self, other):
        return isinstance(other, Point) and (self.x, self.y) == (other.x, other.y)

    def __repr__(self):
        return f"Point({self.x}, {self.y})"


def make_point(x):
    return Point(x, -x)


def test_round_trip_equals_builtin_map(rpm):
    inputs = list(range(-5, 25))
    got = rpm(square, inputs)
    expected = list(map(square, inputs))
    assert got == expected, f"remote_parallel_map(square, {inputs}) returned {got!r}; builtin map gives {expected!r}"


def test_empty_list_returns_empty_list(rpm):
    got = rpm(square, [])
    assert got == [] and isinstance(got, list), f"empty inputs should return [], got {got!r}"


def test_empty_generator_returns_empty_list(rpm):
    got = rpm(square, (x for x in []))
    assert got == [] and isinstance(got, list), f"an empty generator of inputs should return [], got {got!r}"


def test_single_input_returns_one_result(rpm):
    got = rpm(square, [7])
    assert got == [49], f"one input 7 to square should return [49], got {got!r}"


def test_tuple_inputs_unpack_into_args_other_inputs_are_one_argument(rpm):
    inputs = [(1, 2), [3, 4], (5,), (), "text", {"key": 1}, ((6, 7),)]
    expected = [(1, 2), ([3, 4],), (5,), (), ("text",), ({"key": 1},), ((6, 7),)]
    got = rpm(collect_args, inputs)
    assert got == expected, (
        "a tuple input must be unpacked into *args and anything else passed as one argument: "
        f"f(*args) returning args gave {got!r} for inputs {inputs!r}; expected {expected!r}"
    )
    got = rpm(power, [(2, 3), (3, 2), (10, 0)])
    assert got == [8, 9, 1], f"power(base, exponent) over tuple inputs gave {got!r}, expected [8, 9, 1]"


def test_namedtuple_and_other_tuple_subclass_inputs_unpack_into_args(rpm):
    got = rpm(power, [Exponentiation(2, 3), Exponentiation(base=3, exponent=2), TaggedPair((10, 2))])
    assert got == [8, 9, 100], (
        "Burla unpacks every tuple instance into *args (isinstance(x, tuple)), namedtuples included: "
        f"power(base, exponent) over Exponentiation(2, 3), Exponentiation(3, 2) and a tuple subclass (10, 2) "
        f"gave {got!r}, expected [8, 9, 100]"
    )


def test_async_function_is_awaited_and_returns_its_value(rpm):
    got = rpm(async_square, [1, 2, 3])
    assert got == [1, 4, 9], f"an `async def` function should be awaited in the worker; got {got!r}, expected [1, 4, 9]"


def test_async_function_error_is_raised_with_its_own_frame(rpm):
    try:
        rpm(async_raise, [0, 5])
    except LookupError as error:
        assert "async failure" in str(error), f"message changed: {error}"
        traceback_text = getattr(error, "burla_traceback", "")
        assert "async_raise" in traceback_text, f"the remote traceback should show the coroutine's frame:\n{traceback_text}"
        assert "asyncio" not in traceback_text, f"the remote traceback shows asyncio internals:\n{traceback_text}"
    else:
        raise AssertionError("the coroutine raised LookupError; the call should have raised it")


def test_lambda_runs(rpm):
    got = rpm(lambda x: x + 1000, [1, 2, 3])
    assert got == [1001, 1002, 1003], f"a lambda returned {got!r}, expected [1001, 1002, 1003]"


def test_closure_sees_captured_values(rpm):
    offset = 17
    table = {"a": 1, "b": 2}

    def lookup_plus_offset(key):
        return table[key] + offset

    got = rpm(lookup_plus_offset, ["a", "b", "a"])
    assert got == [18, 19, 18], f"a closure over offset=17 and a dict returned {got!r}, expected [18, 19, 18]"


def test_functools_partial_runs(rpm):
    cube = functools.partial(power, exponent=3)
    got = rpm(cube, [1, 2, 3])
    assert got == [1, 8, 27], f"functools.partial(power, exponent=3) returned {got!r}, expected [1, 8, 27]"
    powers_of_two = functools.partial(power, 2)
    got = rpm(powers_of_two, [0, 1, 10])
    assert got == [1, 2, 1024], f"functools.partial(power, 2) returned {got!r}, expected [1, 2, 1024]"


def test_callable_object_runs_with_its_state(rpm):
    got = rpm(Multiplier(3), [1, 2, 5])
    assert got == [3, 6, 15], f"a callable object Multiplier(3) returned {got!r}, expected [3, 6, 15]"


def test_none_results_are_returned(rpm):
    got = rpm(returns_nothing, list(range(5)))
    assert got == [None] * 5, f"a function without return should give [None] * 5, got {got!r}"
    got = rpm(none_for_odd, list(range(6)))
    assert got == [0, None, 2, None, 4, None], f"None results mixed with values came back as {got!r}"


def test_thousand_inputs_return_in_input_order(rpm):
    inputs = list(range(1000))
    got = rpm(identity_with_jitter, inputs)
    assert isinstance(got, list), f"expected a list, got {type(got).__name__}"
    assert len(got) == 1000, f"1,000 inputs gave {len(got)} results"
    wrong = [i for i, value in enumerate(got) if value != i]
    assert not wrong, f"results not in input order: first wrong position {wrong[0]} holds {got[wrong[0]]!r}"


def test_list_results_in_input_order_when_completion_order_differs(rpm):
    got = rpm(earlier_inputs_finish_later, [0, 1, 2, 3])
    assert got == [0, 10, 20, 30], (
        f"input 0 finishes last, but the list must still be in input order: got {got!r}, expected [0, 10, 20, 30]"
    )


def test_generator_and_iterator_inputs_work(rpm):
    got = rpm(square, (x for x in range(50)))
    assert got == [x * x for x in range(50)], f"a generator of 50 inputs returned {got!r}"
    got = rpm(square, iter([4, 5, 6]))
    assert got == [16, 25, 36], f"an iterator of inputs returned {got!r}, expected [16, 25, 36]"
    got = rpm(square, map(abs, [-1, -2]))
    assert got == [1, 4], f"a map object of inputs returned {got!r}, expected [1, 4]"
    got = rpm(square, range(4))
    assert got == [0, 1, 4, 9], f"range(4) as inputs returned {got!r}, expected [0, 1, 4, 9]"


def test_large_result_round_trips(rpm):
    size = 20 * 1000 * 1000
    got = rpm(filled_bytes, [size, 3])
    assert len(got) == 2, f"2 inputs gave {len(got)} results"
    assert isinstance(got[0], bytes) and len(got[0]) == size, (
        f"a 20 MB bytes result came back as {type(got[0]).__name__} of length {len(got[0])}"
    )
    assert got[0] == filled_bytes(size), "a 20 MB bytes result came back with different content"
    assert got[1] == filled_bytes(3), f"the small result beside it came back as {got[1]!r}"


def test_large_input_round_trips(rpm):
    data = bytes(range(256)) * (20 * 1000 * 1000 // 256)
    got = rpm(digest, [data])
    assert got == [digest(data)], "a 20 MB bytes input arrived with a different length or content"


def test_instances_of_classes_defined_by_the_caller_round_trip(rpm):
    got = rpm(make_point, [1, 2])
    assert got == [Point(1, -1), Point(2, -2)], f"Point results came back as {got!r}"
    assert all(type(point) is Point for point in got), (
        f"results should be instances of the caller's Point class, got types {[type(p) for p in got]}"
    )
    got = rpm(lambda point: point.x + point.y, [Point(3, 4)])
    assert got == [7], f"a Point input gave {got!r}, expected [7]"


def test_signature_matches_documented_api():
    import burla

    documented = [
        ("function_", inspect.Parameter.empty),
        ("inputs", inspect.Parameter.empty),
        ("func_cpu", 1),
        ("func_ram", 4),
        ("func_gpu", None),
        ("image", None),
        ("grow", False),
        ("max_parallelism", None),
        ("detach", False),
        ("generator", False),
        ("spinner", True),
        ("region", None),  # Burla 1.7
        ("disk_gb", None),
    ]
    parameters = list(inspect.signature(burla.remote_parallel_map).parameters.values())
    got = [(p.name, p.default) for p in parameters[: len(documented)]]
    assert got == documented, f"remote_parallel_map's leading parameters are {got}, the API documents {documented}"
    for parameter in parameters[: len(documented)]:
        assert parameter.kind == inspect.Parameter.POSITIONAL_OR_KEYWORD, (
            f"documented parameter {parameter.name} must be positional-or-keyword, is {parameter.kind}"
        )
    extra = [p.name for p in parameters[len(documented) :] if p.kind != inspect.Parameter.KEYWORD_ONLY]
    assert not extra, f"parameters added beyond the API must be keyword-only: {extra}"
