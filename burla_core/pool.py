"""A pool of warm worker processes on one machine, shared by the local backend and the node agent.

    submit(job, batch) ──► job.pending ──dispatch──► worker (one batch at a time) ─┐
                                                                                   │ msgpack
    job.sink ◄── RESULTS / LOGS / ERROR / NOTICE ◄── reader thread ◄───────────────┘
                                                      │ also: a worker's death → retry its input
                                                      │ once on a new worker; func_ram watchdog;
                                                      └ cancel deadlines

Each job gets up to `slots` workers of its own, so several jobs run side by side. Workers stay
alive between jobs (a second call starts in milliseconds) and exit with this process: the pool
stops them at exit, and each worker also watches its parent. A forked worker also shares two
memory arenas with the pool, through which the big buffers of inputs and results travel instead
of the pipes (channel.py).
"""

from __future__ import annotations

import atexit

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
import time
from dataclasses import dataclass, field
from typing import Callable

import multiprocess
from multiprocess import connection as mp_connection

from . import channel
from .capture import PoolOutput
from .channel import ArenaPair, decode_result, encode_inputs
from .errors import InvalidArgument
from .types import ERROR, LOGS, NOTICE, RESULTS, WORKER_DIED, ErrorInfo
from .worker import pack, unpack, worker_main

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


class WorkerPool:
    def __init__(self) -> None:
        self._context = multiprocess.get_context(_start_method())
        self._lock = threading.RLock()
        self._idle: dict[tuple, list[Worker]] = collections.defaultdict(list)
        self._live: dict[object, Worker] = {}  # outbox connection -> worker, busy or idle
        self._by_sentinel: dict[int, Worker] = {}
        self._by_output_fd: dict[int, Worker] = {}  # read ends of workers' fd 1 / fd 2 pipes
        self._jobs: dict[int, PoolJob] = {}
        self._job_keys = itertools.count(1)
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_w, False)
        self._closed = False
        self._sender = Sender()
        self._reader = threading.Thread(target=self._read_loop, name="burla-pool-reader", daemon=True)
        self._reader.start()

    # --- jobs ------------------------------------------------------------------------------

    def open_job(
        self,
        function_bytes: bytes,
        slots: int,
        sink: Callable[[list], None],
        node_id: str = "local",
        env: dict | None = None,
        ram_limit_bytes: int | None = None,
        gpu_indices: list[int] | None = None,
    ) -> PoolJob:
        with self._lock:
            job = PoolJob(
                job_key=next(self._job_keys),
                function_bytes=function_bytes,
                slots=max(1, slots),
                sink=sink,
                node_id=node_id,
                env=dict(env or {}),
                ram_limit_bytes=ram_limit_bytes,
                gpu_indices=list(gpu_indices or []),
            )
            self._jobs[job.job_key] = job
            return job

    def submit(self, job: PoolJob, batch_id: int, items: list) -> None:
        with self._lock:
            if job.canceled or job.closed:
                return
            job.pending.append((batch_id, items))
            self._dispatch(job)

    def cancel(self, job: PoolJob) -> None:
        """Drop the job's queued batches and interrupt its running calls; a worker that does not
        stop within CANCEL_GRACE_SECONDS is killed."""
        with self._lock:
            if job.canceled:
                return
            job.canceled = True
            job.pending.clear()
            deadline = time.monotonic() + CANCEL_GRACE_SECONDS
            for worker in list(job.workers):
                if worker.batch is None:
                    continue
                worker.cancel_job.value = job.job_key
                worker.cancel_deadline = deadline
                try:
                    os.kill(worker.pid, signal.SIGUSR1)
                except ProcessLookupError:
                    pass
            self._wake()

    def close(self, job: PoolJob) -> None:
        with self._lock:
            if not job.canceled and (job.pending or any(w.batch for w in job.workers)):
                self.cancel(job)
            job.closed = True
            for worker in list(job.workers):
                if worker.batch is None:
                    self._release(worker)
            if not job.workers:
                self._jobs.pop(job.job_key, None)

    def is_stopped(self, job: PoolJob) -> bool:
        """No call of the job is running any more."""
        with self._lock:
            return not any(worker.batch is not None for worker in job.workers)

    def wait_closed(self, job: PoolJob, timeout: float) -> bool:
        """Wait until every worker of a closed job is back in the pool (or replaced)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if not job.workers:
                    return True
            time.sleep(0.005)
        return False

    # --- workers ---------------------------------------------------------------------------

    def _start_worker(self, profile: tuple, gpu_index: int | None) -> Worker:
        context = self._context
        inbox_r, inbox_w = context.Pipe(duplex=False)
        outbox_r, outbox_w = context.Pipe(duplex=False)
        _widen_pipe(inbox_w)
        _widen_pipe(outbox_w)
        current_index = context.RawValue("q", -1)
        current_job = context.RawValue("q", 0)
        cancel_job = context.RawValue("q", 0)
        env = {"CUDA_VISIBLE_DEVICES": str(gpu_index)} if gpu_index is not None else {}
        # Shared arenas need the worker to inherit them: a forked worker, on Linux.
        arenas = ArenaPair.create(context.RawValue) if self._shares_arenas() else None
        output = PoolOutput(context)
        process = context.Process(
            target=worker_main,
            args=(inbox_r, outbox_w, current_index, current_job, cancel_job, env, os.getpid(), None, arenas),
            kwargs={"output_ends": output.worker_ends()},
            name="burla-worker",
            daemon=False,  # daemonic processes may not start children: nested jobs need that
        )
        channel.forking_worker(arenas)
        try:
            process.start()
        except BaseException:
            if arenas is not None:
                arenas.close()
            raise
        finally:
            channel.forking_worker(None)
        inbox_r.close()
        outbox_w.close()
        output.after_start()
        worker = Worker(process, inbox_w, outbox_r, current_index, current_job, cancel_job, profile, arenas=arenas, output=output)
        if self._context.get_start_method() == "fork":
            # A forked worker starts out mapping the caller's memory: func_ram counts what it adds.
            worker.memory_baseline = _rss_bytes(process.pid) or 0
        return worker

    def _shares_arenas(self) -> bool:
        return self._context.get_start_method() == "fork" and channel.arenas_supported()

    def _take_worker(self, job: PoolJob) -> Worker:
        """An idle worker of the right kind, or a new one. A GPU job's workers each own one GPU
        (CUDA_VISIBLE_DEVICES is set before anything in the worker can initialise CUDA)."""
        if job.gpu_indices:
            # A GPU no worker of any job holds; several jobs share a node's GPUs this way too.
            holders = collections.Counter(
                w.profile[1] for other in self._jobs.values() for w in other.workers if w.profile[0] == "gpu"
            )
            gpu_index = min(job.gpu_indices, key=lambda index: (holders[index], job.gpu_indices.index(index)))
            profile: tuple = ("gpu", gpu_index)
        else:
            gpu_index, profile = None, ("cpu",)
        idle = self._idle.get(profile)
        while idle:
            worker = idle.pop()
            if worker.process.is_alive():
                return worker
            self._forget(worker)
        return self._start_worker(profile, gpu_index)

    def _dispatch(self, job: PoolJob) -> None:
        """Give queued batches to free workers of the job, starting workers up to its slots."""
        while job.pending and not job.canceled:
            worker = next((w for w in job.workers if w.batch is None), None)
            if worker is None:
                if len(job.workers) >= job.slots:
                    return
                worker = self._take_worker(job)
                worker.job = job
                job.workers.add(worker)
                self._live[worker.outbox] = worker
                self._by_sentinel[worker.process.sentinel] = worker
                for fd in worker.output.stream_of_fd:
                    self._by_output_fd[fd] = worker
                self._wake()
            batch_id, items = job.pending.popleft()
            worker.batch = OutstandingBatch(batch_id, dict(items))
            # Written by the sender thread, outside the lock: a big function or batch never
            # holds up the reader (other jobs' results) or a caller taking the lock.
            if worker.loaded_job != job.job_key:
                self._sender.post(worker, ["job", job.job_key, job.function_bytes, job.env])
                worker.loaded_job = job.job_key
            self._sender.post(worker, ["batch", job.job_key, batch_id, items])

    def _release(self, worker: Worker) -> None:
        """The worker's job is over: back to the idle list, or stopped if there are enough."""
        job = worker.job
        if job is not None:
            job.workers.discard(worker)
            if job.closed and not job.workers:
                self._jobs.pop(job.job_key, None)
        worker.job = None
        worker.batch = None
        worker.cancel_deadline = None
        idle = self._idle[worker.profile]
        if len(idle) < MAX_IDLE_WORKERS and worker.process.is_alive() and worker.kill_reason is None:
            idle.append(worker)
            # Keep its connection registered: an idle worker's death is noticed and forgotten.
        else:
            self._stop_worker(worker)

    def _stop_worker(self, worker: Worker) -> None:
        try:
            worker.send(["stop"])
        except (BrokenPipeError, OSError):
            pass
        self._forget(worker)

    def _forget(self, worker: Worker) -> None:
        self._live.pop(worker.outbox, None)
        self._by_sentinel.pop(worker.process.sentinel, None)
        for fd in worker.output.stream_of_fd:
            self._by_output_fd.pop(fd, None)
        worker.output.close()
        for connection in (worker.inbox, worker.outbox):
            try:
                connection.close()
            except OSError:
                pass
        if worker.arenas is not None:
            worker.arenas.close()  # the kernel frees them once the worker is gone too

    def _wake(self) -> None:
        try:
            os.write(self._wake_w, b"x")
        except BlockingIOError:
            pass

    # --- the reader thread -----------------------------------------------------------------

    def _read_loop(self) -> None:
        while not self._closed:
            with self._lock:
                waitables = list(self._live) + list(self._by_sentinel) + list(self._by_output_fd) + [self._wake_r]
            try:
                ready = mp_connection.wait(waitables, timeout=WATCH_INTERVAL)
            except OSError:
                ready = []  # a connection closed under us; loop and rebuild the list
            with self._lock:
                for item in ready:
                    if item == self._wake_r:
                        os.read(self._wake_r, 4096)
                    elif isinstance(item, int):
                        worker = self._by_output_fd.get(item)
                        if worker is not None:
                            piece = worker.output.read(item)
                            if piece is not None:
                                self._output(worker, *piece)
                            continue
                        worker = self._by_sentinel.get(item)
                        if worker is not None:
                            self._drain(worker)
                            self._on_death(worker)
                    else:
                        worker = self._live.get(item)
                        if worker is not None:
                            self._drain(worker)
                self._watch()

    def _drain(self, worker: Worker) -> None:
        """Handle every message the worker has written so far."""
        connection = worker.outbox
        try:
            while connection.poll():
                self._handle(worker, unpack(connection.recv_bytes()))
        except (EOFError, OSError):
            pass

    def _handle(self, worker: Worker, items: list) -> None:
        results: dict[int, list] = {}
        logs: dict[int, list] = {}
        released = 0
        for item in items:
            kind = item[0]
            job = self._jobs.get(item[1])
            if kind == "r" and type(item[3]) is list:
                # Copied out of the worker's arena now, even for a canceled job: the worker may
                # reuse that memory once told so (below).
                item[3], generation = decode_result(item[3], worker.arenas)
                released = max(released, generation)
            if kind == "s":
                worker.current_index.value = item[2]
                continue
            if kind == "l":
                # Output, even of a canceled job: what was written before the cancel still
                # reaches the caller. Logs go before results: a line printed before `return`
                # must reach the caller before the result.
                self._output(worker, item[1], item[2], item[3], item[4], logs)
                continue
            if job is None or job.canceled:
                if kind == "d":
                    self._batch_done(worker)
                continue
            if kind == "r":
                batch = worker.batch
                if batch is not None:
                    batch.unreported.pop(item[2], None)
                results.setdefault(job.job_key, []).append((item[2], item[3]))
            elif kind == "e":
                batch = worker.batch
                if batch is not None:
                    batch.unreported.pop(item[2], None)
                self._flush_events(results, logs)
                job.sink([ERROR, job.node_id, (item[2], ErrorInfo.from_wire(item[3]))])
            elif kind == "d":
                self._flush_events(results, logs)
                self._batch_done(worker)
        if released:
            worker.arenas.released.value = released
        self._flush_events(results, logs)

    def _output(self, worker: Worker, job_key: int, input_index: int, stream: int, data: bytes, logs: dict | None = None) -> None:
        """Bytes a worker's input wrote to fd 1 or 2, decoded: to `logs` (sent by _flush_events)
        or straight to the job. Output whose job has ended (a process the function started
        and left running) is written to this process's own stream rather than lost."""
        for owner_job, owner_index, text in worker.output.decode(stream, job_key, input_index, data):
            job = self._jobs.get(owner_job)
            if job is None:
                _write_orphan_output(stream, text)
            elif logs is not None:
                logs.setdefault(owner_job, []).append((owner_index, stream, text))
            else:
                job.sink([LOGS, job.node_id, [(owner_index, stream, text)]])

    def _flush_events(self, results: dict, logs: dict) -> None:
        # Logs first: a line printed before `return` must reach the caller before the result.
        for job_key, entries in logs.items():
            job = self._jobs.get(job_key)
            if job is not None:
                job.sink([LOGS, job.node_id, entries])
        for job_key, entries in results.items():
            job = self._jobs.get(job_key)
            if job is not None and not job.canceled:
                job.sink([RESULTS, job.node_id, entries])
        logs.clear()
        results.clear()

    def _batch_done(self, worker: Worker) -> None:
        job = worker.job
        worker.batch = None
        worker.cancel_deadline = None
        if job is None:
            return
        if job.canceled or job.closed or (not job.pending):
            if job.closed or job.canceled:
                self._release(worker)
            return
        self._dispatch(job)

    def _on_death(self, worker: Worker) -> None:
        # What it wrote just before dying (a last line, a faulthandler traceback) goes first.
        for piece in worker.output.leftovers():
            self._output(worker, *piece)
        worker.process.join(timeout=1)
        how = describe_exit(worker.process.exitcode, worker.kill_reason)
        self._forget(worker)
        for idle in self._idle.values():
            if worker in idle:
                idle.remove(worker)
        job = worker.job
        batch = worker.batch
        worker.job = None
        worker.batch = None
        if job is None:
            return
        job.workers.discard(worker)
        if job.closed and not job.workers:
            self._jobs.pop(job.job_key, None)
        if job.canceled or job.closed or batch is None:
            return
        culprit = worker.current_index.value
        if culprit not in batch.unreported and batch.unreported:
            # It died between calls: blame the next input it would have run, so that a worker
            # that keeps dying can never loop forever on the same batch.
            culprit = next(iter(batch.unreported))
        requeue = [(index, payload) for index, payload in batch.unreported.items() if index != culprit]
        if culprit in batch.unreported:
            deaths = job.deaths.get(culprit, 0) + 1
            job.deaths[culprit] = deaths
            if deaths >= 2:
                job.sink(
                    [
                        ERROR,
                        job.node_id,
                        (culprit, ErrorInfo(type_name="WorkerDied", message=how, kind=WORKER_DIED, how=how)),
                    ]
                )
            else:
                job.sink(
                    [NOTICE, job.node_id, f"input {culprit}: the worker running it {how}; retrying it once on a new worker"]
                )
                job.pending.appendleft((next(job.batch_ids), [(culprit, batch.unreported[culprit])]))
        if requeue:
            job.pending.appendleft((next(job.batch_ids), requeue))
        self._dispatch(job)

    def _watch(self) -> None:
        """Kill workers over their job's func_ram, or ignoring a cancel past its deadline; give
        back the arena pages of workers that moved nothing big for a while."""
        now = time.monotonic()
        for worker in list(self._live.values()):
            arenas = worker.arenas
            if arenas is not None and worker.batch is None and arenas.holds_pages and arenas.idle_for(now) > channel.ARENA_KEEP_SECONDS:
                arenas.give_back_pages()
            if worker.kill_reason is not None:
                continue
            if worker.cancel_deadline is not None and now > worker.cancel_deadline:
                worker.kill_reason = "did not stop when canceled and was killed"
                self._kill(worker)
                continue
            job = worker.job
            if job is None or job.ram_limit_bytes is None or worker.batch is None:
                continue
            resident = _rss_bytes(worker.pid)
            used = None if resident is None else resident - worker.memory_baseline
            if used is not None and used > job.ram_limit_bytes:
                worker.kill_reason = (
                    f"ran out of memory: it used {used / 2**30:.2f} GiB, more than its "
                    f"func_ram of {job.ram_limit_bytes / 2**30:.0f} GiB"
                )
                self._kill(worker)

    def _kill(self, worker: Worker) -> None:
        try:
            os.kill(worker.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass

    # --- shutdown --------------------------------------------------------------------------

    def shutdown(self) -> None:
        with self._lock:
            self._closed = True
            workers = list(self._live.values())
            for idle in self._idle.values():
                workers.extend(idle)
            for worker in set(workers):
                if worker.batch is not None:
                    self._kill(worker)
                else:
                    self._stop_worker(worker)
            self._idle.clear()
            self._live.clear()
            self._by_sentinel.clear()
        deadline = time.monotonic() + 1.0
        for worker in set(workers):
            worker.process.join(timeout=max(0.0, deadline - time.monotonic()))
            if worker.process.is_alive():
                self._kill(worker)
                worker.process.join(timeout=1)
        self._wake()

    def worker_pids(self) -> list[int]:
        with self._lock:
            pids = {w.pid for w in self._live.values()}
            for idle in self._idle.values():
                pids.update(w.pid for w in idle)
            return sorted(pids)


class Sender:
    """Writes messages to workers from a thread of its own, in the order they were posted.

    The pool decides under its lock what a worker gets; the bytes (a 50 MB function, a batch's
    big inputs placed in the worker's arena) are packed and written here, so the lock is never
    held across a pipe write. A worker gets messages only when it is idle and reading, so a
    write blocks at most for as long as it takes that worker to read it."""

    def __init__(self) -> None:
        self._queue: collections.deque = collections.deque()
        self._ready = threading.Condition()
        self._thread = threading.Thread(target=self._run, name="burla-pool-sender", daemon=True)
        self._thread.start()

    def post(self, worker: "Worker", message: list) -> None:
        with self._ready:
            self._queue.append((worker, message))
            self._ready.notify()

    def _run(self) -> None:
        while True:
            with self._ready:
                while not self._queue:
                    self._ready.wait()
                worker, message = self._queue.popleft()
            try:
                if message[0] == "batch":
                    message = ["batch", message[1], message[2], encode_inputs(message[3], worker.arenas)]
                worker.send(message)
            except Exception:
                pass  # it died (or was closed meanwhile): the reader sees it and requeues its batch


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


def _write_orphan_output(stream: int, text: str) -> None:
    target = sys.stdout if stream == 1 else sys.stderr
    try:
        target.write(text)
        target.flush()
    except (AttributeError, OSError, ValueError):
        pass


def _rss_bytes(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/statm", "rb") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


_pool: WorkerPool | None = None
_pool_lock = threading.Lock()


def shared_pool() -> WorkerPool:
    """The process-wide pool (a forked child gets a fresh one)."""
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = WorkerPool()
        return _pool


def _shutdown_shared_pool() -> None:
    if _pool is not None:
        _pool.shutdown()


def _forget_pool_in_child() -> None:
    global _pool, _pool_lock
    _pool = None
    _pool_lock = threading.Lock()


atexit.register(_shutdown_shared_pool)
os.register_at_fork(after_in_child=_forget_pool_in_child)
