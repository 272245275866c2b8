"""Pickling of functions, inputs, results and exceptions, with the size limits of the API.

Plain values (numbers, strings, bytes, None and flat tuples of them) go through the C pickler,
which is ~7x faster than cloudpickle; everything else goes through cloudpickle, so lambdas,
closures and classes defined in `__main__` travel by value to machines that lack them.

Big buffers travel beside the pickle, never copied into it (pickle protocol 5, out of band): an
input or result holding a buffer of OUT_OF_BAND_BYTES or more pickles to an `OutOfBandPickle`
(the small pickle plus views of the buffers themselves), anything else to plain `bytes`. Numpy
arrays (and any type whose reducer hands pickle a `PickleBuffer`) go out of band wherever they
sit; `bytes`, `bytearray` and `memoryview` do when they are the value itself or an element of
an argument or result tuple (the C pickler never asks about them elsewhere). A payload is
unpickled by one function, `loads`, whatever its form.
"""

from __future__ import annotations

import copyreg
import io
import linecache
import pickle
import traceback
import types
from collections import ChainMap
from dataclasses import dataclass
from typing import Any, Union

import cloudpickle

from .errors import (
    FunctionTooBig,
    InputTooBig,
    InvalidArgument,
    RemoteException,
    RemoteTraceback,
    UnpicklableFunction,
    UnpicklableInput,
    UnpicklableResult,
    WorkerDied,
)
from .types import FUNCTION_ERROR, JOB_SETUP_FAILED, UNPICKLABLE_RESULT, WORKER_DIED, ErrorInfo

MAX_FUNCTION_BYTES = 100 * 1000 * 1000
MAX_INPUT_BYTES = 200 * 1000 * 1000
PROTOCOL = pickle.HIGHEST_PROTOCOL

OUT_OF_BAND_BYTES = 1 << 20  # a buffer this big travels beside the pickle, not inside it

_PLAIN = frozenset({int, float, str, bytes, bool, type(None)})
_SMALL = frozenset({int, float, bool, type(None)})  # values whose pickle cannot be large
_UNBUFFERED = _PLAIN - {bytes}  # plain values that never travel out of band
_BUFFERS = frozenset({bytes, bytearray, memoryview})


def _code_reduce_keeping_filename(code: types.CodeType):
    """cloudpickle replaces a function's file name with "<dynamic-code>"; keep the real one so
    that remote tracebacks name the user's file and line."""
    constructor, args = _cloudpickle_code_reduce(code)
    args = tuple(code.co_filename if arg == "<dynamic-code>" else arg for arg in args)
    return constructor, args


_cloudpickle_code_reduce = getattr(getattr(cloudpickle, "cloudpickle", None), "_code_reduce", None)


class _Pickler(cloudpickle.Pickler):
    if _cloudpickle_code_reduce is not None:
        dispatch_table = ChainMap({types.CodeType: _code_reduce_keeping_filename}, cloudpickle.Pickler.dispatch_table)

    def reducer_override(self, obj):
        if isinstance(obj, BaseException) and type(obj) in copyreg.dispatch_table:
            # A library registered a reducer for exception types (tblib's, which importing
            # distributed installs for every one): it rebuilds them without their __init__
            # (SystemExit loses its code) and pickles their tracebacks. An exception travels the
            # way its own type pickles it.
            return obj.__reduce_ex__(PROTOCOL)
        return super().reducer_override(obj)


def cloudpickle_dumps(value: Any, buffer_callback=None) -> bytes:
    with io.BytesIO() as buffer:
        _Pickler(buffer, protocol=PROTOCOL, buffer_callback=buffer_callback).dump(value)
        return buffer.getvalue()


@dataclass(eq=False)
class OutOfBandPickle:
    """A pickle whose big buffers travel beside it: `pickle.loads(data, buffers=buffers)`.

    `buffers` are flat, contiguous byte buffers (memoryview, bytes, a mapped region). `is_bytes[i]`
    says buffer i is the content of a `bytes` object: a receiver that must copy it anyway may
    hand it over as a `bytes` object, which the reconstructor then takes as it is. `len()` is the
    whole payload's size, as for a plain pickle."""

    data: bytes
    buffers: list
    is_bytes: list

    def __len__(self) -> int:
        return len(self.data) + sum(memoryview(buffer).nbytes for buffer in self.buffers)


Payload = Union[bytes, OutOfBandPickle]  # what an input or a result travels as


def _as_bytes(buffer) -> bytes:
    return buffer if type(buffer) is bytes else bytes(buffer)


def _as_memoryview(buffer, format: str, shape: tuple, readonly: bool) -> memoryview:
    view = memoryview(buffer).cast("B")
    if format != "B" or len(shape) != 1:
        view = view.cast(format, shape)
    return view.toreadonly() if readonly else view


class _WholeBuffer:
    """Stands in for a bytes, bytearray or memoryview while pickling, so that its content is a
    PickleBuffer, which protocol 5 sends out of band (exact bytes never reach a reducer)."""

    __slots__ = ("value",)

    def __init__(self, value) -> None:
        self.value = value

    def __reduce_ex__(self, protocol: int):
        value = self.value
        kind = type(value)
        if kind is bytes:
            return _as_bytes, (pickle.PickleBuffer(value),)
        if kind is bytearray:
            return bytearray, (pickle.PickleBuffer(value),)
        if value.format not in _NATIVE_FORMATS:
            raise TypeError(f"cannot pickle a memoryview of format {value.format!r}; return bytes(view) instead")
        content = value if value.c_contiguous else memoryview(value.tobytes()).cast(value.format, value.shape)
        return _as_memoryview, (pickle.PickleBuffer(content), value.format, value.shape, value.readonly)


_NATIVE_FORMATS = frozenset("bBhHiIlLqQnNfdec?")


def _stand_in(value):
    kind = type(value)
    if kind in _BUFFERS and (kind is memoryview or len(value) >= OUT_OF_BAND_BYTES):
        return _WholeBuffer(value)
    return value


def _with_stand_ins(value):
    """`value` with its big bytes / bytearray and every memoryview (itself, or as an element of a
    tuple) replaced by stand-ins; None when there is none (the common case: nothing to do)."""
    kind = type(value)
    if kind in _BUFFERS:
        stand_in = _stand_in(value)
        return None if stand_in is value else stand_in
    if kind is tuple and any(type(v) in _BUFFERS for v in value):
        replaced = tuple(_stand_in(v) for v in value)
        return replaced if any(type(v) is _WholeBuffer for v in replaced) else None
    return None


def dumps(value: Any) -> bytes:
    """One self-contained pickle (buffers inside it): for whatever must be a single blob."""
    kind = type(value)
    if kind in _PLAIN or (kind is tuple and all(type(v) in _PLAIN for v in value)):
        return pickle.dumps(value, PROTOCOL)
    if kind is memoryview or (kind is tuple and any(type(v) is memoryview for v in value)):
        value = _with_stand_ins(value)
    return cloudpickle_dumps(value)


def pickles_the_same_later(value: Any) -> bool:
    """True for a value that no code can change and whose pickle is plain bytes (a number, a
    str, None, a tuple of those): pickling it later gives the same payload as now."""
    kind = type(value)
    return kind in _SMALL or kind is str or (kind is tuple and _UNBUFFERED.issuperset(map(type, value)))


def dumps_payload(value: Any) -> Payload:
    """`value` pickled with its big buffers out of band (an OutOfBandPickle), or plain bytes
    when it has none."""
    if pickles_the_same_later(value):  # hot: a worker returns many numbers
        return pickle.dumps(value, PROTOCOL)
    kind = type(value)
    stand_ins = _with_stand_ins(value)
    if stand_ins is None and (kind in _PLAIN or (kind is tuple and all(type(v) in _PLAIN for v in value))):
        return pickle.dumps(value, PROTOCOL)
    buffers: list = []

    def out_of_band(buffer: pickle.PickleBuffer) -> bool:
        raw = buffer.raw()
        if raw.nbytes < OUT_OF_BAND_BYTES:
            return True  # small: inside the pickle
        buffers.append(raw)
        return False

    target = value if stand_ins is None else stand_ins
    if type(target) is _WholeBuffer or (type(target) is tuple and all(type(v) in _PLAIN or type(v) is _WholeBuffer for v in target)):
        data = pickle.dumps(target, PROTOCOL, buffer_callback=out_of_band)
    else:
        data = cloudpickle_dumps(target, buffer_callback=out_of_band)
    if not buffers:
        return data
    return OutOfBandPickle(data, buffers, [type(raw.obj) is bytes for raw in buffers])


def loads(payload: Payload | memoryview) -> Any:
    """The value of a payload, in either form."""
    if type(payload) is OutOfBandPickle:
        return pickle.loads(payload.data, buffers=payload.buffers)
    return pickle.loads(payload)


def as_one_pickle(payload: Payload) -> bytes:
    """A payload as one self-contained pickle, for storing it (the job store keeps blobs): the
    out-of-band buffers go inside, and `pickle.loads` of the result gives the value."""
    if type(payload) is not OutOfBandPickle:
        return payload
    inside = [bytes(buffer) if is_bytes else bytearray(buffer) for buffer, is_bytes in zip(payload.buffers, payload.is_bytes)]
    return pickle.dumps(_Joined(payload.data, inside), PROTOCOL)


class _Joined:
    __slots__ = ("data", "buffers")

    def __init__(self, data: bytes, buffers: list) -> None:
        self.data, self.buffers = data, buffers

    def __reduce__(self):
        return _loads_joined, (self.data, self.buffers)


def _loads_joined(data: bytes, buffers: list) -> Any:
    return pickle.loads(data, buffers=buffers)


def describe(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def dumps_function(function: Any) -> bytes:
    if not callable(function):
        raise InvalidArgument(f"function_ must be callable; got {describe(function)} of type {type(function).__name__}")
    try:
        payload = cloudpickle_dumps(function)
    except Exception as error:  # cloudpickle raises many types: TypeError, PicklingError, ...
        name = getattr(function, "__qualname__", describe(function))
        raise UnpicklableFunction(
            f"function {name} cannot be pickled with cloudpickle ({type(error).__name__}: {error}). "
            "Something it uses (a lock, an open file, a client connection) must be created inside "
            "the function instead of captured from outside."
        ) from error
    if len(payload) > MAX_FUNCTION_BYTES:
        raise FunctionTooBig(
            f"function {getattr(function, '__qualname__', '?')} is {len(payload) / 1e6:.1f} MB pickled; "
            f"the limit is {MAX_FUNCTION_BYTES / 1e6:.0f} MB. Load large data inside the function "
            "(from a file or URL) or pass it as an input instead of capturing it in a closure or global."
        )
    return payload


def as_args(value: Any) -> tuple:
    """A tuple input (a namedtuple or any other tuple subclass too, as Burla does) is unpacked
    into *args; anything else is one argument."""
    if type(value) is tuple:
        return value
    return tuple(value) if isinstance(value, tuple) else (value,)


def dumps_input(input_index: int, value: Any) -> Payload:
    """The pickled *args of one input (hot: runs once per input in the caller)."""
    kind = type(value)
    if kind in _SMALL:
        return pickle.dumps((value,), PROTOCOL)
    try:
        payload = dumps_payload(as_args(value))
    except Exception as error:
        raise UnpicklableInput(
            f"input {input_index} ({describe(value)}) cannot be pickled ({type(error).__name__}: {error})",
            input_index,
        ) from error
    if len(payload) > MAX_INPUT_BYTES:
        raise InputTooBig(
            f"input {input_index} is {len(payload) / 1e6:.1f} MB pickled; the limit is "
            f"{MAX_INPUT_BYTES / 1e6:.0f} MB. Store large data somewhere the function can read it "
            "and pass its location instead.",
            input_index,
        )
    return payload


# --- exceptions -------------------------------------------------------------------------------


def _user_tb(error: BaseException, skip_frames: int):
    tb = error.__traceback__
    for _ in range(skip_frames):
        if tb is not None and tb.tb_next is not None:
            tb = tb.tb_next
    return tb


def user_traceback(error: BaseException, skip_frames: int) -> str:
    """The traceback of `error` without the first `skip_frames` frames (Burla's own)."""
    return "".join(traceback.format_exception(type(error), error, _user_tb(error, skip_frames)))


def render_traceback(info: ErrorInfo) -> str:
    """The remote traceback as text. Frames whose source the worker could not read (a function
    sent from a notebook cell to another machine) take their lines from this machine's linecache."""
    frames = info.frames
    if not frames or all(line for _, _, _, line in frames):
        return info.traceback
    summary = traceback.StackSummary.from_list(
        [(filename, lineno, name, line or linecache.getline(filename, lineno).strip()) for filename, lineno, name, line in frames]
    )
    return "Traceback (most recent call last):\n" + "".join(summary.format()) + info.exception_only


def _exception_from_state(cls: type, args: tuple, state: dict) -> BaseException:
    """An exception rebuilt without calling its __init__ (which may need other arguments than
    the ones it passed on to Exception): its args and attributes, as they were."""
    try:
        error = cls.__new__(cls, *args)
    except Exception:
        error = cls.__new__(cls)
    try:
        cls.__init__(error, *args)  # where its args fit its __init__: what it sets (SystemExit.code)
    except Exception:
        pass
    error.args = args
    error.__dict__.update(state)
    return error


class _ExceptionState:
    """Pickles an exception as its class, args and __dict__ (the way Ray rebuilds one)."""

    def __init__(self, error: BaseException) -> None:
        self.error = error

    def __reduce__(self):
        error = self.error
        return _exception_from_state, (type(error), error.args, dict(error.__dict__))


def _pickled_exception(error: BaseException) -> bytes | None:
    """The exception pickled so that it unpickles as its own type: the usual way, or else
    without its __init__. None when neither works (it holds something that cannot travel)."""
    for candidate in (error, _ExceptionState(error)):
        try:
            pickled = cloudpickle_dumps(candidate)
            pickle.loads(pickled)  # an exception whose __init__ needs other args fails only here
            return pickled
        except Exception:
            continue
    return None


def _safe_str(error: BaseException) -> str:
    try:
        return str(error)
    except BaseException:  # the user's __str__ raised: the error itself must still travel
        return f"<{type(error).__name__}.__str__ raised an exception>"


def error_info(error: BaseException, skip_frames: int, kind: str = FUNCTION_ERROR) -> ErrorInfo:
    """What a worker sends when the function raises: the pickled exception when it pickles, and
    always its type name, message and traceback text. Never raises, whatever the exception
    does (a __str__ or __reduce__ that fails): the caller gets the error, not a dead worker."""
    error_type = type(error)
    type_name = f"{getattr(error_type, '__module__', '?')}.{getattr(error_type, '__qualname__', error_type.__name__)}".removeprefix("builtins.")
    message = _safe_str(error)
    try:
        tb = _user_tb(error, skip_frames)
        text = "".join(traceback.format_exception(error_type, error, tb))
        frames = [(f.filename, f.lineno or 0, f.name, f.line or "") for f in traceback.extract_tb(tb)]
        exception_only = "".join(traceback.format_exception_only(error_type, error))
    except Exception:
        text = exception_only = f"{type_name}: {message}\n"
        frames = []
    return ErrorInfo(
        type_name=type_name,
        message=message,
        traceback=text,
        frames=frames,
        exception_only=exception_only,
        pickled=_pickled_exception(error),
        kind=kind,
    )


def rebuild_exception(info: ErrorInfo, input_index: int | None) -> BaseException:
    """The exception to raise in the caller: the original type when it unpickles here, else a
    RemoteException carrying its type name, message and traceback text. With an input index,
    the remote traceback is chained and the note `[burla] failed on input index N` added."""
    error: BaseException | None = None
    if info.pickled is not None:
        try:
            error = pickle.loads(info.pickled)
        except Exception:
            error = None
    text = render_traceback(info)
    if error is None:
        error = RemoteException(info.type_name, info.message, text, input_index)
    if input_index is None:
        return error
    try:
        error.burla_input_index = input_index  # type: ignore[attr-defined]
        error.burla_traceback = text  # type: ignore[attr-defined]
    except Exception:  # an exception type with __slots__ or a read-only attribute
        pass
    error.__cause__ = RemoteTraceback(
        f"Traceback from input {input_index} (remote):\n" + text.split("\n", 1)[-1]
    )
    note = f"[burla] failed on input index {input_index}"
    if note not in (getattr(error, "__notes__", None) or []):
        error.add_note(note)
    return error


def exception_for(input_index: int, info: ErrorInfo) -> BaseException:
    """The exception a failed input raises in the caller, whatever failed: the function, its
    worker, or pickling its result."""
    if info.kind == WORKER_DIED:
        return WorkerDied(
            f"input {input_index}: the worker running it {info.how}, and again when it was retried "
            "on a new worker. The function may be exiting the process (os._exit), crashing in native "
            "code, or using more memory than func_ram allows.",
            input_index,
            info.how,
        )
    if info.kind == UNPICKLABLE_RESULT:
        return UnpicklableResult(
            f"the return value of input {input_index} cannot be pickled ({info.type_name}: {info.message}); "
            "return plain data (numbers, strings, lists, dicts, arrays) instead",
            input_index,
        )
    if info.kind == JOB_SETUP_FAILED:
        return rebuild_exception(info, None)  # about the job on a node (its packages), not this input
    return rebuild_exception(info, input_index)


def load_result(input_index: int, payload: Payload | memoryview) -> Any:
    """One result, unpickled in the caller (a plain pickle, or one with out-of-band buffers)."""
    try:
        return loads(payload)
    except Exception as error:
        raise UnpicklableResult(
            f"the return value of input {input_index} cannot be unpickled here ({type(error).__name__}: {error}); "
            "is the module that defines its type importable on this machine?",
            input_index,
        ) from error
