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
import collections
import itertools
import os
import signal
import threading
import time
from typing import Callable

import multiprocess

from . import channel
from .capture import PoolOutput
from .channel import ArenaPair, encode_inputs
from .pool_reader import PoolReading
from .types import ERROR, NOTICE, WORKER_DIED, ErrorInfo
from .worker import worker_main
from .workers import (  # noqa: F401  (re-exported: the pool's records are used by its callers)
    CANCEL_GRACE_SECONDS,
    MAX_IDLE_WORKERS,
    OutstandingBatch,
    PoolJob,
    Sender,
    Worker,
    _rss_bytes,
    _start_method,
    _widen_pipe,
    describe_exit,
)


class WorkerPool(PoolReading):
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
            # A big function or batch is written by the sender thread, outside the lock: it never
            # holds up the reader (other jobs' results) or a caller taking the lock. A small one
            # goes at once (Sender.send).
            if worker.loaded_job != job.job_key:
                self._sender.send(worker, ["job", job.job_key, job.function_bytes, job.env], len(job.function_bytes))
                worker.loaded_job = job.job_key
            # Big inputs go into the worker's arena here, under the lock (so its arenas cannot be
            # closed meanwhile by the worker's death); the message is written by the sender.
            message = ["batch", job.job_key, batch_id, encode_inputs(items, worker.arenas)]
            self._sender.send(worker, message, sum(len(payload) for _, payload in items))

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
        owner = (worker.job.job_key, worker.current_index.value) if worker.job is not None else None
        for piece in worker.output.leftovers(owner):
            self._output(worker, *piece)
        worker.process.join(timeout=1)
        how = describe_exit(worker.process.exitcode, worker.kill_reason)
        if worker.process.is_alive():
            self._kill(worker)  # given up on: never left running with its input retried elsewhere
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
            self._sender.close()
        deadline = time.monotonic() + 1.0
        for worker in set(workers):
            worker.process.join(timeout=max(0.0, deadline - time.monotonic()))
            if worker.process.is_alive():
                self._kill(worker)
                worker.process.join(timeout=1)
        with self._lock:
            for worker in set(workers):
                self._forget(worker)  # the killed ones too: their pipes, output fds and arenas
        self._wake()

    def worker_pids(self) -> list[int]:
        with self._lock:
            pids = {w.pid for w in self._live.values()}
            for idle in self._idle.values():
                pids.update(w.pid for w in idle)
            return sorted(pids)


class ProcessPool:
    """One pool per process, made on first use: shut down at exit, and forgotten in a forked
    child (which makes its own; the parent's workers are not the child's to use)."""

    def __init__(self, factory) -> None:
        self._factory = factory
        self._pool = None
        self._lock = threading.Lock()
        atexit.register(self.shutdown)
        if hasattr(os, "register_at_fork"):
            os.register_at_fork(after_in_child=self._forget)

    def get(self):
        with self._lock:
            if self._pool is None:
                self._pool = self._factory()
            return self._pool

    def shutdown(self) -> None:
        if self._pool is not None:
            self._pool.shutdown()

    def _forget(self) -> None:
        self._pool = None
        self._lock = threading.Lock()


_shared = ProcessPool(WorkerPool)


def shared_pool() -> WorkerPool:
    """The process-wide pool (a forked child gets a fresh one)."""
    return _shared.get()
