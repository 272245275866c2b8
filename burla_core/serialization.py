"""Pickling of functions, inputs, results and exceptions, with the size limits of the API.

Plain values (numbers, strings, bytes, None and flat tuples of them) go through the C pickler,
which is ~7x faster than cloudpickle; everything else goes through cloudpickle, so lambdas,
closures and classes defined in `__main__` travel by value to machines that lack them.
"""

from __future__ import annotations

import io
import linecache
import pickle
import traceback
import types
from collections import ChainMap
from typing import Any

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

_PLAIN = frozenset({int, float, str, bytes, bool, type(None)})
_SMALL = frozenset({int, float, bool, type(None)})  # values whose pickle cannot be large


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


def cloudpickle_dumps(value: Any) -> bytes:
    with io.BytesIO() as buffer:
        _Pickler(buffer, protocol=PROTOCOL).dump(value)
        return buffer.getvalue()


def dumps(value: Any) -> bytes:
    kind = type(value)
    if kind in _PLAIN or (kind is tuple and all(type(v) in _PLAIN for v in value)):
        return pickle.dumps(value, PROTOCOL)
    return cloudpickle_dumps(value)


loads = pickle.loads


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
    """A tuple input is unpacked into *args; anything else is one argument."""
    return value if type(value) is tuple else (value,)


def dumps_input(input_index: int, value: Any) -> bytes:
    """The pickled *args of one input (hot: runs once per input in the caller)."""
    kind = type(value)
    if kind in _SMALL:
        return pickle.dumps((value,), PROTOCOL)
    try:
        payload = dumps(value if kind is tuple else (value,))
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


def error_info(error: BaseException, skip_frames: int, kind: str = FUNCTION_ERROR) -> ErrorInfo:
    """What a worker sends when the function raises: the pickled exception when it pickles, and
    always its type name, message and traceback text."""
    tb = _user_tb(error, skip_frames)
    text = "".join(traceback.format_exception(type(error), error, tb))
    frames = [(f.filename, f.lineno or 0, f.name, f.line or "") for f in traceback.extract_tb(tb)]
    try:
        pickled = cloudpickle_dumps(error)
        pickle.loads(pickled)  # an exception whose __init__ needs other args fails only here
    except Exception:
        pickled = None
    return ErrorInfo(
        type_name=f"{type(error).__module__}.{type(error).__qualname__}".removeprefix("builtins."),
        message=str(error),
        traceback=text,
        frames=frames,
        exception_only="".join(traceback.format_exception_only(type(error), error)),
        pickled=pickled,
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


def load_result(input_index: int, payload: bytes | memoryview) -> Any:
    """One result, unpickled in the caller."""
    try:
        return pickle.loads(payload)
    except Exception as error:
        raise UnpicklableResult(
            f"the return value of input {input_index} cannot be unpickled here ({type(error).__name__}: {error}); "
            "is the module that defines its type importable on this machine?",
            input_index,
        ) from error
