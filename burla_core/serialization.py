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
)

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
    """A tuple input (a namedtuple or any other tuple subclass too, as Burla does) is unpacked
    into *args; anything else is one argument."""
    if type(value) is tuple:
        return value
    return tuple(value) if isinstance(value, tuple) else (value,)


def dumps_input(input_index: int, value: Any) -> bytes:
    """The pickled *args of one input (hot: runs once per input in the caller)."""
    kind = type(value)
    if kind in _SMALL:
        return pickle.dumps((value,), PROTOCOL)
    try:
        payload = dumps(as_args(value))
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


def render_traceback(info: dict) -> str:
    """The remote traceback as text. Frames whose source the worker could not read (a function
    sent from a notebook cell to another machine) take their lines from this machine's linecache."""
    frames = info.get("frames")
    if not frames or all(line for _, _, _, line in frames):
        return info["traceback"]
    summary = traceback.StackSummary.from_list(
        [(filename, lineno, name, line or linecache.getline(filename, lineno).strip()) for filename, lineno, name, line in frames]
    )
    return "Traceback (most recent call last):\n" + "".join(summary.format()) + info.get("exception_only", "")


def _exception_from_state(cls: type, args: tuple, state: dict) -> BaseException:
    """An exception rebuilt without calling its __init__ (which may need other arguments than
    the ones it passed on to Exception): its args and attributes, as they were."""
    try:
        error = cls.__new__(cls, *args)
    except Exception:
        error = cls.__new__(cls)
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


def error_info(error: BaseException, skip_frames: int) -> dict:
    """What a worker sends when the function raises: the pickled exception when it pickles, and
    always its type name, message and traceback text. Never raises, whatever the exception
    does (a __str__ or __reduce__ that fails): the caller gets the error, not a dead worker."""
    kind = type(error)
    type_name = f"{getattr(kind, '__module__', '?')}.{getattr(kind, '__qualname__', kind.__name__)}".removeprefix("builtins.")
    message = _safe_str(error)
    try:
        tb = _user_tb(error, skip_frames)
        text = "".join(traceback.format_exception(kind, error, tb))
        frames = [(f.filename, f.lineno, f.name, f.line or "") for f in traceback.extract_tb(tb)]
        exception_only = "".join(traceback.format_exception_only(kind, error))
    except Exception:
        text = exception_only = f"{type_name}: {message}\n"
        frames = []
    return {
        "pickled": _pickled_exception(error),
        "type_name": type_name,
        "message": message,
        "traceback": text,
        "frames": frames,
        "exception_only": exception_only,
    }


def rebuild_exception(info: dict, input_index: int) -> BaseException:
    """The exception to raise in the caller: the original type when it unpickles here, else a
    RemoteException carrying its type name, message and traceback text."""
    error: BaseException | None = None
    if info.get("pickled") is not None:
        try:
            error = pickle.loads(info["pickled"])
        except Exception:
            error = None
    text = render_traceback(info)
    if error is None:
        error = RemoteException(info["type_name"], info["message"], text, input_index)
    try:
        error.burla_input_index = input_index  # type: ignore[attr-defined]
        error.burla_traceback = text  # type: ignore[attr-defined]
    except Exception:  # an exception type with __slots__ or a read-only attribute
        pass
    error.__cause__ = RemoteTraceback(
        f"Traceback from input {input_index} (remote):\n" + text.split("\n", 1)[-1]
    )
    return error
