"""What runs inside a Ray worker: the probe of what its node has, and one batch as one Ray
streaming-generator task whose every yield is a frame (burla_core.engine.runner's format),
carried to the caller as soon as it is yielded.

Ray's polite cancel (`ray.cancel(ref)`) is a SIGINT to the worker process: while a batch runs it
only asks run_batch to stop, so that the calls are stopped (and the pool left sound) before the
task ends; `ray.cancel(ref, force=True)` then is only needed for a task that does not end.
"""

from __future__ import annotations

import signal
import threading
from typing import Iterator

NESTED_ENV = "BURLA_RAY_NESTED"  # set in the calls' environment: a call made inside one lends its CPUs


def probe() -> dict:
    """What this worker's machine has (burla_core.machine.machine_report), asked by the caller."""
    from burla_core.machine import machine_report

    return machine_report()


def run_batch_stream(function_bytes: bytes, items: list, env: dict, ram_limit_bytes: int | None) -> Iterator[list]:
    from burla_core.engine.runner import run_batch

    stop = threading.Event()
    in_main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGINT, lambda signum, frame: stop.set()) if in_main_thread else None
    try:
        for frame in run_batch(function_bytes, items, stop.is_set, dict(env, **{NESTED_ENV: "1"}), ram_limit_bytes):
            if not stop.is_set():  # a canceled task's yields are dropped by Ray anyway
                yield frame
    finally:
        if in_main_thread:
            signal.signal(signal.SIGINT, previous)
