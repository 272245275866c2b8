"""A worker's output, captured at the file-descriptor level and tagged with the input that wrote it.

    the function, its child processes (multiprocessing, subprocess), C code
        │ write to fd 1 / fd 2: the write ends of the worker's own two output pipes
        ▼
    ┌─ while an input runs: the pool's reader thread reads what arrives (a worker in a container,
    │  whose pipes the pool cannot reach, reads its own in a thread) and tags it with the owner,
    │  (job, input index)
    ├─ when an input ends: the worker flushes sys.stdout / sys.stderr and drains what is left
    │  into the message that carries the input's result, so its output always comes first
    └─ when the worker dies: the pool reads what is left and gives it to the input that ran, so
       a line printed just before os._exit, a segfault or the func_ram kill still arrives

Reading a pipe and changing the owner both happen under the worker's output lock, so output is
never given to an input other than the one that was running when it was written. Bytes travel
as they are read (partial lines, pieces of long lines); the pool decodes them (UTF-8, one
decoder per stream, so a character split between two reads survives) and the caller's console
keeps inputs apart within a line.
"""

from __future__ import annotations

import codecs
import functools
import io
import os
import select
import sys
import threading
from dataclasses import dataclass, field
from typing import Any, Callable

from multiprocess.connection import Connection

STDOUT, STDERR = 1, 2
READ_CHUNK_BYTES = 1 << 16
MAX_READ_BYTES = 1 << 20  # one read round takes at most this much, so one noisy worker cannot stall the rest
LOCK_WAIT_SECONDS = 0.002  # the worker holds its lock for microseconds, at an input's start and end


def read_available(fd: int, limit: int = MAX_READ_BYTES) -> bytes:
    """What the (non-blocking) pipe holds now, up to `limit` bytes."""
    chunks = []
    total = 0
    while total < limit:
        try:
            chunk = os.read(fd, READ_CHUNK_BYTES)
        except (BlockingIOError, InterruptedError):
            break
        except OSError:  # closed under us
            break
        if not chunk:
            break
        chunks.append(chunk)
        total += len(chunk)
    return b"".join(chunks)


@dataclass(eq=False)
class OutputEnds:
    """What a worker process needs to capture its own output; made by PoolOutput, picklable
    while a worker process starts (spawn, forkserver send the pipes' ends along)."""

    stdout_write: Connection
    stderr_write: Connection
    stdout_read: Connection
    stderr_read: Connection
    lock: Any  # multiprocess Lock shared with the pool, or a threading.Lock for a self-reading worker
    owner_job: Any  # RawValue("q"): the job whose input owns the output now
    owner_index: Any  # RawValue("q"): that input (-1 before the job's first)


class _Owner:
    """The owner as plain attributes, for a worker whose output nobody else reads."""

    def __init__(self, value: int) -> None:
        self.value = value


OUTPUT_FDS_ENV = "BURLA_OUTPUT_FDS"  # stdout write, stderr write, stdout read, stderr read


def own_pipes(inherited: tuple[int, int, int, int] | None = None) -> OutputEnds:
    """Pipes for a worker that reads its own output (a `--stdio` worker): its pool's, passed at
    start (`inherited`, so that the pool can still read what is left when the worker dies), or
    new ones (a worker in a container, which no pool's descriptors reach)."""
    if inherited is not None:
        stdout_write, stderr_write, stdout_read, stderr_read = inherited
    else:
        stdout_read, stdout_write = os.pipe()
        stderr_read, stderr_write = os.pipe()
    for fd in (stdout_read, stderr_read):
        os.set_blocking(fd, False)
    return OutputEnds(
        Connection(stdout_write, readable=False),
        Connection(stderr_write, readable=False),
        Connection(stdout_read, writable=False),
        Connection(stderr_read, writable=False),
        threading.Lock(),
        _Owner(0),
        _Owner(-1),
    )


# --- the pool's side -------------------------------------------------------------------------------


@dataclass
class StreamDecoder:
    """UTF-8 decoding of one stream's bytes as they arrive; bytes an owner leaves undecodable
    (a cut multi-byte character) are given to that owner, escaped, before another's."""

    decoder: codecs.IncrementalDecoder = field(default_factory=lambda: codecs.getincrementaldecoder("utf-8")("backslashreplace"))
    owner: tuple[int, int] | None = None

    def decode(self, owner: tuple[int, int], data: bytes) -> list[tuple[tuple[int, int], str]]:
        pieces = []
        if owner != self.owner and self.owner is not None:
            rest = self.decoder.decode(b"", final=True)
            self.decoder.reset()
            if rest:
                pieces.append((self.owner, rest))
        self.owner = owner
        text = self.decoder.decode(data)
        if text:
            pieces.append((owner, text))
        return pieces


class PoolOutput:
    """The pool's side of one worker's output: the pipes' read ends (none for a worker that
    reads its own) and the decoders of what arrives."""

    def __init__(self, context=None) -> None:
        self.decoders = {STDOUT: StreamDecoder(), STDERR: StreamDecoder()}
        self.stream_of_fd: dict[int, int] = {}  # read while the worker lives (forked workers)
        self.stream_of_death_fd: dict[int, int] = {}  # read only once it died (--stdio workers)
        self._ends: OutputEnds | None = None
        self._child_fds: tuple[int, ...] = ()
        if context is None:
            return
        fds = {}
        for stream in (STDOUT, STDERR):
            read_fd, write_fd = os.pipe()
            os.set_blocking(read_fd, False)  # shared with the worker's copy: both only ever poll
            fds[stream] = (read_fd, write_fd)
            self.stream_of_fd[read_fd] = stream
        self.lock = context.Lock()
        self.owner_job = context.RawValue("q", 0)
        self.owner_index = context.RawValue("q", -1)
        self._ends = OutputEnds(
            Connection(fds[STDOUT][1], readable=False),
            Connection(fds[STDERR][1], readable=False),
            Connection(os.dup(fds[STDOUT][0]), writable=False),
            Connection(os.dup(fds[STDERR][0]), writable=False),
            self.lock,
            self.owner_job,
            self.owner_index,
        )

    def worker_ends(self) -> OutputEnds | None:
        return self._ends

    @classmethod
    def for_stdio_worker(cls) -> "PoolOutput":
        """Pipes for a worker started by a command that reads its own output: it gets both ends
        (`child_fds`, passed at start and named in OUTPUT_FDS_ENV); the pool keeps a copy of the
        read ends, read only once the worker died, so its last words still arrive."""
        output = cls()
        fds = {}
        for stream in (STDOUT, STDERR):
            read_fd, write_fd = os.pipe()
            fds[stream] = (read_fd, write_fd)
            kept = os.dup(read_fd)
            os.set_blocking(kept, False)
            output.stream_of_death_fd[kept] = stream
        output._child_fds = (fds[STDOUT][1], fds[STDERR][1], fds[STDOUT][0], fds[STDERR][0])
        return output

    @property
    def child_fds(self) -> tuple[int, ...]:
        return self._child_fds

    def child_env_value(self) -> str:
        return ",".join(str(fd) for fd in self._child_fds)

    def after_child_started(self) -> None:
        """The child has its copies of the pipes: close ours (the read ends' dups stay)."""
        fds, self._child_fds = self._child_fds, ()
        for fd in fds:
            try:
                os.close(fd)
            except OSError:
                pass

    def after_start(self) -> None:
        """The worker has its copies: close ours of the write ends (and the read ends' dups)."""
        ends, self._ends = self._ends, None
        if ends is not None:
            for connection in (ends.stdout_write, ends.stderr_write, ends.stdout_read, ends.stderr_read):
                connection.close()

    def read(self, fd: int, worker_alive: bool = True) -> tuple[int, int, int, bytes] | None:
        """(job, input_index, stream, bytes) of what the pipe `fd` holds, or None. A live
        worker's owner is read under its lock; if the worker holds the lock (it is draining at
        an input's end), None: it takes the bytes itself."""
        stream = self.stream_of_fd.get(fd)
        if stream is None:
            return None
        if worker_alive:
            if not self.lock.acquire(timeout=LOCK_WAIT_SECONDS):
                return None
            try:
                owner_job, owner_index = self.owner_job.value, self.owner_index.value
                data = read_available(fd)
            finally:
                self.lock.release()
        else:
            owner_job, owner_index = self.owner_job.value, self.owner_index.value
            data = read_available(fd)
        return (owner_job, owner_index, stream, data) if data else None

    def leftovers(self, owner: tuple[int, int] | None = None) -> list[tuple[int, int, int, bytes]]:
        """What the pipes of a dead worker still hold, for the input that was running (`owner`
        for a --stdio worker, whose owner the pool knows from its reports): one read each (a
        pipe holds less than a read takes), so a process the function left running and writing
        cannot keep the pool here."""
        pieces = []
        for fd in list(self.stream_of_fd):
            piece = self.read(fd, worker_alive=False)
            if piece is not None:
                pieces.append(piece)
        if owner is not None:
            for fd, stream in self.stream_of_death_fd.items():
                data = read_available(fd)
                if data:
                    pieces.append((owner[0], owner[1], stream, data))
        return pieces

    def decode(self, stream: int, job: int, input_index: int, data: bytes) -> list[tuple[int, int, str]]:
        return [(owner[0], owner[1], text) for owner, text in self.decoders[stream].decode((job, input_index), data)]

    def close(self) -> None:
        self.after_start()
        self.after_child_started()
        for fd in list(self.stream_of_fd) + list(self.stream_of_death_fd):
            try:
                os.close(fd)
            except OSError:
                pass
        self.stream_of_fd.clear()
        self.stream_of_death_fd.clear()


# --- the worker's side -----------------------------------------------------------------------------


class _RelayedText(io.TextIOWrapper):
    """A text stream whose flush() also sends what it flushed, before it returns: for a worker
    that reads its own pipes, so that a line printed with flush=True right before os._exit is
    not lost with the thread that would have sent it."""

    def __init__(self, buffer, after_flush: Callable[[], None], **kwargs) -> None:
        super().__init__(buffer, **kwargs)
        self._after_flush = after_flush

    def flush(self) -> None:
        super().flush()
        self._after_flush()


def _nothing() -> None:
    pass


def _text_stream(fd: int, errors: str, after_flush: Callable[[], None] | None = None) -> io.TextIOWrapper:
    """A stream like Python's own on a terminal: line-buffered (a "\\r" flushes too, so progress
    bars show), with `.buffer`, `fileno()` and `reconfigure()`."""
    raw = io.FileIO(fd, "w", closefd=False)
    options = dict(encoding="utf-8", errors=errors, line_buffering=True)
    if after_flush is not None:
        return _RelayedText(io.BufferedWriter(raw), after_flush, **options)
    return io.TextIOWrapper(io.BufferedWriter(raw), **options)


class WorkerOutput:
    """Installs the output pipes as the worker's fds 1 and 2 and new sys.stdout / sys.stderr on
    them, and marks where each input's output starts and ends."""

    def __init__(self, ends: OutputEnds, relay: Callable[[list], None] | None = None) -> None:
        """`relay`: for a worker that reads its own output, what sends a list of tagged pieces
        at once; None when the pool reads the pipes."""
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (AttributeError, OSError, ValueError):
                pass
        os.dup2(ends.stdout_write.fileno(), STDOUT)
        os.dup2(ends.stderr_write.fileno(), STDERR)
        ends.stdout_write.close()
        ends.stderr_write.close()
        self._ends = ends  # keeps the read ends open
        self.read_fds = ((STDOUT, ends.stdout_read.fileno()), (STDERR, ends.stderr_read.fileno()))
        self.lock = ends.lock
        self.owner_job = ends.owner_job
        self.owner_index = ends.owner_index
        # Hot: runs once per input. Bound methods, and epoll where there is one: one syscall
        # for both pipes, the cheapest "anything written?" the kernel answers.
        self._acquire, self._release = ends.lock.acquire, ends.lock.release
        if hasattr(select, "epoll"):
            self._any_written = select.epoll()
            for _, fd in self.read_fds:
                self._any_written.register(fd, select.EPOLLIN)
            self._check = functools.partial(self._any_written.poll, 0, 1)
        else:
            self._any_written = select.poll()
            for _, fd in self.read_fds:
                self._any_written.register(fd, select.POLLIN)
            self._check = functools.partial(self._any_written.poll, 0)
        self._relay_to = relay
        after_flush = self._relay_now if relay is not None else None
        self.stdout = _text_stream(STDOUT, "strict", after_flush)
        self.stderr = _text_stream(STDERR, "backslashreplace", after_flush)  # what Python uses for stderr
        sys.stdout, sys.stderr = self.stdout, self.stderr
        if relay is not None:
            threading.Thread(target=self._relay, args=(relay,), name="burla-output-relay", daemon=True).start()
            os.register_at_fork(after_in_child=self._forked)

    def _forked(self) -> None:
        """In a child the function forked (multiprocessing, os.fork): its flushes only write.
        Relaying there would read the pipes under a copy of the lock (held forever if a thread
        of this worker held it at the fork: the child hangs in print) and send through a copy
        of the outbox with no sender thread; the child's bytes stay in the pipes instead, for
        this worker's relay thread, which reads them as for any write to fds 1 and 2."""
        for stream in (self.stdout, self.stderr):
            stream._after_flush = _nothing

    def _relay_now(self) -> None:
        """After a flush, in a worker that reads its own pipes: send what they hold at once. The
        lock first, even when they look empty: the relay thread may hold their bytes, and sends
        them before it lets go of the lock."""
        items: list = []
        with self.lock:
            if self._check():
                self._take(items.append)
        if items:
            self._relay_to(items)

    def start_job(self, job: int) -> None:
        self._acquire()
        self.owner_job.value = job
        self.owner_index.value = -1
        self._release()

    def start_input(self, input_index: int) -> None:
        self._acquire()
        self.owner_index.value = input_index
        self._release()

    def end_input(self, add: Callable[[list], None]) -> None:
        """Everything the input wrote goes to `add` (as "l" items) before its result does."""
        stdout, stderr = self.stdout, self.stderr
        if sys.stdout is not stdout or sys.stderr is not stderr:
            self._restore_streams()
        try:
            stdout.flush()
            stderr.flush()
        except (OSError, ValueError):
            pass
        if self._check():
            self._acquire()
            try:
                self._take(add)
            finally:
                self._release()

    def _restore_streams(self) -> None:
        """The function replaced sys.stdout or sys.stderr and left it so: flush what it put
        there, and give the next input the captured streams again."""
        for name, mine in (("stdout", self.stdout), ("stderr", self.stderr)):
            current = getattr(sys, name)
            if current is not mine:
                try:
                    current.flush()
                except Exception:
                    pass
                setattr(sys, name, mine)

    def _take(self, add: Callable[[list], None]) -> None:
        job, input_index = self.owner_job.value, self.owner_index.value
        for stream, fd in self.read_fds:
            data = read_available(fd)
            if data:
                add(["l", job, input_index, stream, data])

    def _relay(self, relay: Callable[[list], None]) -> None:
        poll = select.poll()  # its own: one poll object may not be polled by two threads
        for _, fd in self.read_fds:
            poll.register(fd, select.POLLIN)
        while True:
            try:
                poll.poll()
            except InterruptedError:
                continue
            items: list = []
            with self.lock:
                self._take(items.append)
                # Sent before the lock goes: a flush (print(..., flush=True)) that finds the pipes
                # empty because this thread took their bytes returns only once they are sent, so
                # a line printed just before a crash is not lost with this thread.
                if items:
                    relay(items)
            if not items:
                threading.Event().wait(0.01)  # readable but empty (taken by end_input meanwhile)


def inherited_output_fds() -> tuple[int, int, int, int] | None:
    """The output pipes a --stdio worker's pool passed it (OUTPUT_FDS_ENV), or None."""
    value = os.environ.pop(OUTPUT_FDS_ENV, "")
    try:
        fds = tuple(int(part) for part in value.split(",")) if value else ()
    except ValueError:
        return None
    return fds if len(fds) == 4 else None  # type: ignore[return-value]
