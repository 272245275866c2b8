"""What runs inside a Dask worker: the probe of what it has, and one batch as one Dask task.

A batch task publishes its frames on the job's event topic (`Worker.log_event`: batched on the
worker's stream to the scheduler, which pushes them to the subscribed caller), in order:
    [task_id, [["s"]]]            it started
    [task_id, frame]              results, log lines, errors as they happen (runner's format)
    [task_id, [["x", failure]]]   it ended (failure: None, or why it broke)
A task whose future was canceled (Ctrl-C, the job's error, the caller gone) finds its state
"cancelled" within POLL_SECONDS and stops its calls.
"""

from __future__ import annotations

import os
import tempfile
import uuid

NESTED_MARK_ENV = "BURLA_DASK_NESTED_MARK"
RUNNING_STATES = ("executing", "long-running")


def probe() -> dict:
    """What this worker's machine has (burla_core.machine.machine_report), asked by the caller."""
    from burla_core.machine import machine_report

    return machine_report()


def run_batch_task(function_bytes: bytes, items: list, topic: str, task_id: str, env: dict, ram_limit_bytes: int | None) -> None:
    """One batch, run by a Dask worker thread. Its results travel as events, not as its return
    value: they reach the caller as each input finishes."""
    from distributed import get_worker, secede

    from burla_core.engine.runner import run_batch

    worker = get_worker()
    key = worker.get_current_task()
    # A nested remote_parallel_map inside the function touches this file: the task then leaves
    # the worker's thread pool (secede), so that the inner call's tasks find a thread; otherwise
    # outer tasks waiting for inner ones that wait for their threads would deadlock.
    mark = os.path.join(tempfile.gettempdir(), f"burla-nested-{uuid.uuid4().hex}")
    seceded = False

    def stop_requested() -> bool:
        nonlocal seceded
        if not seceded and os.path.exists(mark):
            secede()
            seceded = True
        state = worker.state.tasks.get(key)
        return state is None or state.state not in RUNNING_STATES

    def publish(frame: list) -> None:
        worker.log_event(topic, [task_id, frame])

    publish([["s"]])
    try:
        for frame in run_batch(function_bytes, items, stop_requested, dict(env, **{NESTED_MARK_ENV: mark}), ram_limit_bytes):
            publish(frame)
    except BaseException as error:
        publish([["x", f"{type(error).__name__}: {error}"]])
        raise
    finally:
        try:
            os.remove(mark)
        except OSError:
            pass
    publish([["x", None]])


def mark_nested_call() -> None:
    """Called by the dask transport when a call starts inside a Burla task on Dask (see above)."""
    mark = os.environ.get(NESTED_MARK_ENV)
    if mark:
        try:
            with open(mark, "a"):
                pass
        except OSError:
            pass
