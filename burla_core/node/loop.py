"""The caller's event loop for node traffic: one asyncio loop on a daemon thread per process.

Sessions and clients of every job of this process run on it. At exit, jobs still open on nodes
(a script that ends holding a partly consumed generator result) are ended there first, so that
they do not hold the nodes' slots until their lease runs out, and then the clients are closed.
A forked child gets a loop of its own.
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import os
import threading
import weakref
from typing import Any, Awaitable, Callable, Coroutine

EXIT_SECONDS = 2.5  # how long exit waits for open jobs to be ended on their nodes


class LoopThread:
    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="burla-http-client", daemon=True)
        self.thread.start()

    def start(self, coroutine: Coroutine) -> concurrent.futures.Future:
        """Run `coroutine` on the loop; its future. A loop that is gone gets nothing scheduled
        (and the coroutine is closed, never left un-awaited)."""
        if self.loop.is_closed() or not self.thread.is_alive():
            coroutine.close()
            future: concurrent.futures.Future = concurrent.futures.Future()
            future.set_exception(RuntimeError("the burla client loop has stopped"))
            return future
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop)

    def run(self, coroutine: Coroutine, timeout: float | None = None) -> Any:
        """Run `coroutine` and wait for its result; past `timeout` it is canceled, not abandoned."""
        future = self.start(coroutine)
        try:
            return future.result(timeout)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise


_loop_thread: LoopThread | None = None
_lock = threading.Lock()
# Called at exit, on the loop, before the clients close: each ends one open job on its node.
_exit_closers: "weakref.WeakSet[ExitCloser]" = weakref.WeakSet()
_client_closers: list[Callable[[], Awaitable[None]]] = []


class ExitCloser:
    """Something to end when the process exits (an open node session)."""

    async def close_at_exit(self) -> None:  # pragma: no cover - the interface
        raise NotImplementedError


def loop_thread() -> LoopThread:
    global _loop_thread
    with _lock:
        if _loop_thread is None:
            _loop_thread = LoopThread()
        return _loop_thread


def close_at_exit(closer: ExitCloser) -> None:
    _exit_closers.add(closer)


def forget_at_exit(closer: ExitCloser) -> None:
    _exit_closers.discard(closer)


def on_exit_close_clients(closer: Callable[[], Awaitable[None]]) -> None:
    _client_closers.append(closer)


def _close_everything() -> None:
    if _loop_thread is None:
        return
    sessions = list(_exit_closers)

    async def close_all() -> None:
        if sessions:
            await asyncio.wait([asyncio.ensure_future(s.close_at_exit()) for s in sessions], timeout=EXIT_SECONDS)
        for close_clients in _client_closers:
            await close_clients()

    try:
        _loop_thread.run(close_all(), timeout=EXIT_SECONDS + 1.0)
    except Exception:  # exit goes on: the nodes' leases end what could not be ended here
        pass


def _forget_in_child() -> None:
    global _loop_thread, _lock
    _loop_thread = None
    _lock = threading.Lock()
    _exit_closers.clear()


os.register_at_fork(after_in_child=_forget_in_child)
atexit.register(_close_everything)
