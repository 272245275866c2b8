"""A worker process as the pool sees it: the records of workers, jobs and batches, how a death is
described, and the sender thread that writes to workers outside the pool's lock."""

from __future__ import annotations

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None  # type: ignore[assignment]
import collections
import itertools
import os
import signal
import sys
import threading
from dataclasses import dataclass, field
from typing import Callable

import multiprocess

from .capture import PoolOutput
from .channel import ArenaPair
from .errors import InvalidArgument
from .worker import pack

CANCEL_GRACE_SECONDS = 1.0  # a worker that ignores cancelation this long is killed
WATCH_INTERVAL = 0.2
PIPE_BUFFER_BYTES = 1 << 20
MAX_IDLE_WORKERS = max(8, (os.cpu_count() or 2) * 2)


def _start_method() -> str:
    valid = multiprocess.get_all_start_methods()
    chosen = os.environ.get("BURLA_START_METHOD")
    if chosen:
        if chosen not in valid:
            raise InvalidArgument(
                f"BURLA_START_METHOD={chosen!r} is not a start method of this platform; use one of "
                f"{', '.join(valid)}, or unset it for the default"
            )
        return chosen
    # fork is fast and inherits the caller's imports; macOS and Windows need spawn.
    return "fork" if sys.platform.startswith("linux") else "spawn"


def describe_exit(exitcode: int | None, reason: str | None) -> str:
    if reason:
        return reason
    if exitcode is None:
        return "stopped answering"
    if exitcode == 137:  # how a container reports a SIGKILL inside it (its memory limit, often)
        return "was killed (status 137: out of memory or SIGKILL)"
    if exitcode < 0:
        try:
            name = signal.Signals(-exitcode).name
        except ValueError:
            name = f"signal {-exitcode}"
        text = f"was killed by {name}"
        if -exitcode == signal.SIGKILL:
            text += " (the system may have run out of memory)"
        return text
    # Not sys.exit: that raises SystemExit, which comes back as the function's error.
    return f"exited with status {exitcode} (os._exit inside the function, or native code exiting the process?)"


@dataclass(eq=False)
class Worker:
    process: object
    inbox: object  # we send on it
    outbox: object  # we receive on it
    current_index: object
    current_job: object
    cancel_job: object
    profile: tuple
    loaded_job: int | None = None
    job: "PoolJob | None" = None
    batch: "OutstandingBatch | None" = None
    kill_reason: str | None = None
    cancel_deadline: float | None = None
    arenas: ArenaPair | None = None  # memory shared with a forked worker (None: all goes inline)
    output: PoolOutput = field(default_factory=PoolOutput)  # how its fd 1 / fd 2 output arrives
    memory_baseline: int = 0  # its resident bytes when started: shared with the caller under fork

    @property
    def pid(self) -> int:
        return self.process.pid

    def send(self, message: list) -> None:
        self.inbox.send_bytes(pack(message))


@dataclass(eq=False)
class OutstandingBatch:
    batch_id: int
    unreported: dict  # input_index -> payload


@dataclass(eq=False)
class PoolJob:
    job_key: int
    function_bytes: bytes
    slots: int
    sink: Callable[[list], None]
    node_id: str
    env: dict
    ram_limit_bytes: int | None
    gpu_indices: list[int]
    pending: collections.deque = field(default_factory=collections.deque)
    workers: set = field(default_factory=set)
    deaths: dict = field(default_factory=dict)  # input_index -> deaths so far
    canceled: bool = False
    closed: bool = False
    batch_ids: itertools.count = field(default_factory=lambda: itertools.count(1_000_000_000))



class Sender:
    """Writes messages to workers from a thread of its own, in the order they were posted.

    The pool decides under its lock what a worker gets (and places a batch's big inputs in the
    worker's arena); the message (a 50 MB function, a batch) is packed and written here, so the
    lock is never held across a pipe write. A worker gets messages only when it is idle and reading, so a
    write blocks at most for as long as it takes that worker to read it."""

    #: A message this small goes from the posting thread itself (see send): it fits in any pipe's
    #: buffer, so writing it to a worker that is reading never blocks.
    DIRECT_BYTES = 16 * 1024

    def __init__(self) -> None:
        self._queue: collections.deque = collections.deque()
        self._ready = threading.Condition()
        self._unwritten: collections.Counter = collections.Counter()  # worker -> its messages not yet written
        self._thread = threading.Thread(target=self._run, name="burla-pool-sender", daemon=True)
        self._thread.start()

    def post(self, worker: "Worker", message: list | bytes) -> None:
        with self._ready:
            self._queue.append((worker, message))
            self._unwritten[worker] += 1
            self._ready.notify()

    def send(self, worker: "Worker", message: list, payload_bytes: int) -> None:
        """Like post, but a small message (`payload_bytes`: about what it carries) for a worker
        with nothing left to write goes at once, from this thread: the next batch reaches a
        worker that finished one without a hop through the sender thread (each hop is a
        thread's wake-up, slow right after idling)."""
        if payload_bytes <= self.DIRECT_BYTES:
            data = pack(message)
            with self._ready:
                if len(data) <= self.DIRECT_BYTES and not self._unwritten[worker]:
                    try:
                        worker.inbox.send_bytes(data)
                    except Exception:
                        pass  # it died (or was closed meanwhile): the reader sees it and requeues its batch
                    return
            message = data
        self.post(worker, message)

    def close(self) -> None:
        """Stop the thread once what was posted before is written."""
        with self._ready:
            self._queue.append(None)
            self._ready.notify()

    def _run(self) -> None:
        while True:
            with self._ready:
                while not self._queue:
                    self._ready.wait()
                entry = self._queue.popleft()
            if entry is None:
                return
            worker, message = entry
            try:
                worker.inbox.send_bytes(message if type(message) is bytes else pack(message))
            except Exception:
                pass  # it died (or was closed meanwhile): the reader sees it and requeues its batch
            with self._ready:
                self._unwritten[worker] -= 1
                if not self._unwritten[worker]:
                    del self._unwritten[worker]
            # Not kept while waiting for the next one: a worker the pool let go of must be freed
            # (its pipes and process sentinel closed).
            entry = worker = message = None


def _widen_pipe(connection) -> None:
    """A 1 MiB pipe buffer instead of 64 KiB: big inputs and results cross in far fewer context
    switches (Linux only; elsewhere, or past the system's limit, the default stays)."""
    set_size = getattr(fcntl, "F_SETPIPE_SZ", None) if fcntl is not None else None
    if set_size is None:
        return
    try:
        fcntl.fcntl(connection.fileno(), set_size, PIPE_BUFFER_BYTES)
    except OSError:
        pass


def _rss_bytes(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/statm", "rb") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


