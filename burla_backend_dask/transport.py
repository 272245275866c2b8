"""The dask transport: each batch is one Dask task pinned to its worker; the task's frames come
back on the job's event topic, live, while it runs.

    DaskSession.launch ── client.submit(run_batch_task, workers=[a free worker]) ──► Dask worker
    EventSink ◄── DaskSession.deliver ◄── dispatcher thread ◄── topic handler ◄── log_event frames

A session is one machine: it gives each task to one of the machine's workers with a free slot,
and a worker that leaves the cluster takes its running tasks with it (their inputs are retried,
WORKER_DIED for one lost twice). A function or batch over SCATTER_BYTES does not ride in the
task graph through the scheduler: the function is copied to every worker once per job, a batch
is scattered to the worker that runs it. Canceling a future makes its task see itself
"cancelled" and stop its calls.
"""

from __future__ import annotations

import collections
import logging
import os
import queue
import threading
import time

from burla_core.engine.session import EngineSession, EngineTask
from burla_core.interfaces import NodeSession, Transport
from burla_core.machine import GIB
from burla_core.types import EventSink, JobSpec, NodeInfo

from .client import dask_client
from .provisioner import scheduler_workers, usable_workers
from .remote import NESTED_MARK_ENV, mark_nested_call, run_batch_task
from .settings import ADDRESS_ENV, DaskSettings

log = logging.getLogger("burla.dask")

SCATTER_BYTES = 1_000_000
# A batch read ahead waits on one busy worker: if that worker's call turns out longer than any
# before it, or the others run out of work first (the end of a job), the batch runs late by up
# to its own length. Read ahead only batches that the job's pace so far says take between
# these: long enough that the round trip saved matters, short enough to bound that delay. The
# short batches at the end of a job go to whichever worker frees first, as without read-ahead.
READ_AHEAD_SECONDS = (0.2, 2.0)
WATCH_SECONDS = 1.0  # how often the sessions look for workers that left


def _topic_dropper():
    """A function for the scheduler that drops the events it keeps of a finished job (it keeps
    the last 100,000 of every topic otherwise). Made here so that cloudpickle sends it by value:
    the scheduler need not have Burla installed."""

    def drop_topic(topic: str, dask_scheduler=None) -> None:  # Dask passes the scheduler by keyword
        broker = getattr(dask_scheduler, "_broker", None)
        if broker is not None:
            broker._topics.pop(topic, None)

    return drop_topic


class DaskTransport(Transport):
    def __init__(self, options: dict | None = None) -> None:
        super().__init__(options)
        self.settings = DaskSettings.from_options(self.options)
        self._lock = threading.Lock()
        self._tasks: dict[str, tuple[DaskSession, EngineTask]] = {}
        self._inbox: queue.SimpleQueue = queue.SimpleQueue()
        self._topic: str | None = None
        self._function = None  # the scattered function of the job
        self._dispatcher: threading.Thread | None = None
        self._sessions: list[DaskSession] = []
        self._closed = threading.Event()
        self.client = None

    # --- the job's event channel -----------------------------------------------------------

    def _subscribe(self, job: JobSpec) -> None:
        if self._topic is not None:
            return
        self.client = dask_client(self.settings)
        self._topic = f"burla-{job.job_id}"
        self._resources = job.resources
        self._dispatcher = threading.Thread(target=self._dispatch, name="burla-dask-frames", daemon=True)
        self._dispatcher.start()
        threading.Thread(target=self._watch_workers, name="burla-dask-workers", daemon=True).start()
        # The handler runs on the client's event loop: it only hands the frame to the dispatcher.
        self.client.subscribe_topic(self._topic, lambda event: self._inbox.put(event[1]))
        # A small function rides in each task (cheaper than a lookup); a big one is copied to
        # every worker once. Not to one worker: its death would take the job's only copy along,
        # and every task after it would wait forever for the function.
        if len(job.function_bytes) > SCATTER_BYTES:
            self._function = self.client.scatter(job.function_bytes, broadcast=True, hash=False)
        else:
            self._function = job.function_bytes

    def _dispatch(self) -> None:
        while True:
            message = self._inbox.get()
            if message is None:
                return
            try:
                task_id, frame = message
                with self._lock:
                    entry = self._tasks.get(task_id)
                if entry is None:
                    continue
                session, task = entry
                first = frame[0][0] if frame else None
                if first == "s":
                    session.started(task)
                elif first == "x":
                    self._forget(task)
                    session.ended(task, None if frame[0][1] is None else f"its Dask task failed: {frame[0][1]}")
                else:
                    session.deliver(task, frame)
            except Exception:
                log.warning("a frame from the Dask cluster could not be handled", exc_info=True)

    def _watch_workers(self) -> None:
        """Tasks whose worker left the cluster would never end: end them as lost, and let the
        sessions use workers that joined their machine (a worker its nanny restarted)."""
        while not self._closed.wait(WATCH_SECONDS):
            try:
                workers = scheduler_workers(self.client)
                hosts, _, _ = usable_workers(self.client, workers, self._resources)
            except Exception:
                log.debug("asking the Dask scheduler for its workers failed", exc_info=True)
                continue
            for session in list(self._sessions):
                session.update_workers(hosts.get(session.host, []))

    def track(self, session: "DaskSession", task: EngineTask) -> None:
        with self._lock:
            self._tasks[task.task_id] = (session, task)

    def _forget(self, task: EngineTask) -> None:
        with self._lock:
            self._tasks.pop(task.task_id, None)

    def task_done(self, session: "DaskSession", task: EngineTask, future) -> None:
        """A future ended. A task that ran sends its own end ("x"); one that failed before it
        could (its worker died, it could not be unpickled) ends here."""
        if future.status != "error":
            return
        try:
            error = future.exception(timeout=5)
        except Exception as problem:
            error = problem
        self._inbox.put([task.task_id, [["x", f"{type(error).__name__}: {error}"]]])

    # --- sessions --------------------------------------------------------------------------

    def open_session(self, node: NodeInfo, job: JobSpec, slots: int, events: EventSink) -> NodeSession:
        mark_nested_call()
        self._subscribe(job)
        hosts, _, _ = usable_workers(self.client, scheduler_workers(self.client), job.resources)
        env = {"BURLA_BACKEND": "dask", ADDRESS_ENV: self.settings.address}
        session = DaskSession(self, node, job, slots, events, env, hosts.get(node.address or "", []))
        self._sessions.append(session)
        return session

    def close(self) -> None:
        self._closed.set()
        if self._topic is None:
            return
        self._inbox.put(None)
        try:
            self.client.unsubscribe_topic(self._topic)
            self.client.run_on_scheduler(_topic_dropper(), self._topic)
        except Exception:  # the cluster went away: nothing of the job is left on it either
            log.debug("releasing the job's topic failed", exc_info=True)
        self._function = None
        self._topic = None


class DaskSession(EngineSession):
    """One machine of the job: `workers` maps each of its Dask workers to its slots, `threads`
    to its threads."""

    def __init__(
        self, transport: DaskTransport, node: NodeInfo, job: JobSpec, slots: int, events: EventSink, env: dict,
        workers: list[NodeInfo],
    ) -> None:
        super().__init__(node.node_id, slots, events)
        self.transport = transport
        self.workers = {worker.node_id: worker.slots for worker in workers}
        self.threads = {worker.node_id: worker.cpus for worker in workers}
        self.host = node.address or ""
        self.worker_of: dict[str, str] = {}  # task_id -> the worker running it
        self.env = env
        self.job_id = job.job_id
        self.ram_limit_bytes = job.resources.func_ram * GIB
        # A Dask worker runs a second task given to it once its running one ends: the next batch
        # is there when the slot frees (~1 ms), not a round trip through the scheduler to the
        # caller and back (~10-20 ms). Not inside a call on Dask (its tasks share the threads of
        # the outer call's tasks).
        self.read_ahead = 0 if os.environ.get(NESTED_MARK_ENV) else slots
        self.pace: float | None = None  # seconds per input of the last batch that ended
        self._began: dict[str, tuple[float, int]] = {}  # task_id -> (its start seen, its size)

    def capacity(self) -> int:
        with self._lock:
            return min(self.slots, sum(self.workers.values()))

    def _free_worker(self, task: EngineTask) -> str:
        """The worker with the most free slots (the task is counted as running already). A task
        read ahead goes to a worker whose every thread runs a task of this session, so that Dask
        queues it there (it never runs beside them, over the job's slots); of those, to the one
        with the fewest inputs left to run, queued ones included: it waits there until they
        have run. (Counted in tasks instead, a batch went behind one long queued batch while
        the other worker, with two short ones, ran dry: 0.6 s idle at the end of a job.)"""
        with self._lock:
            busy = collections.Counter(self.worker_of.values())
            left = collections.Counter()
            for other in self._running.values():
                left[self.worker_of.get(other.task_id)] += len(other.items)
            if len(self._running) > self.capacity():
                address = min(self._saturated(busy) or self.workers, key=lambda worker: left[worker])
            else:
                address = max(self.workers, key=lambda worker: (self.workers[worker] - busy[worker], -left[worker]))
            self.worker_of[task.task_id] = address
            return address

    def _saturated(self, busy: collections.Counter) -> list[str]:
        return [worker for worker in self.workers if busy[worker] >= self.threads.get(worker, 1)]

    def may_read_ahead(self, items: list[tuple[int, bytes]]) -> bool:
        shortest, longest = READ_AHEAD_SECONDS
        if self.pace is None or not shortest <= self.pace * len(items) <= longest:
            return False
        return bool(self._saturated(collections.Counter(self.worker_of.values())))

    def started(self, task: EngineTask) -> None:
        with self._lock:
            self._began.setdefault(task.task_id, (time.monotonic(), len(task.items)))
        super().started(task)

    def ended(self, task: EngineTask, failure: str | None = None) -> None:
        with self._lock:
            self.worker_of.pop(task.task_id, None)
            began = self._began.pop(task.task_id, None)
            if began is not None and failure is None and not task.items and began[1]:
                self.pace = (time.monotonic() - began[0]) / began[1]
        super().ended(task, failure)

    def update_workers(self, current: list[NodeInfo]) -> None:
        """The machine's usable workers now: a worker that left takes its running tasks with it
        (their inputs are retried); a new one (a restarted worker) takes tasks from now on."""
        with self._lock:
            addresses = {worker.node_id: worker.slots for worker in current}
            gone = [worker for worker in self.workers if worker not in addresses]
            for worker in gone:
                del self.workers[worker]
                self.threads.pop(worker, None)
            self.workers.update(addresses)
            self.threads.update({worker.node_id: worker.cpus for worker in current})
            lost = [task for task in self.running_tasks() if self.worker_of.get(task.task_id) in gone]
        if lost:
            self.stop(lost)  # release their futures: pinned to a worker that is gone, they would wait forever
        for task in lost:
            self.transport._forget(task)
            self.ended(task, "its Dask worker left the cluster")
        if addresses and not lost:
            self._pump()  # a worker that came back may take waiting batches

    def launch(self, task: EngineTask) -> None:
        transport = self.transport
        client = transport.client
        items = list(task.items.items())
        worker = self._free_worker(task)
        transport.track(self, task)
        if sum(len(payload) for _, payload in items) > SCATTER_BYTES:
            items = client.scatter(items, workers=[worker], broadcast=False, hash=False)
        future = client.submit(
            run_batch_task,
            transport._function,
            items,
            transport._topic,
            task.task_id,
            self.env,
            self.ram_limit_bytes,
            key=f"burla-{self.job_id}-{task.task_id}",  # unique across jobs and processes
            workers=[worker],
            allow_other_workers=False,
            pure=False,
        )
        task.handle = future
        future.add_done_callback(lambda done: transport.task_done(self, task, done))

    def stop(self, tasks: list[EngineTask]) -> None:
        futures = [task.handle for task in tasks if task.handle is not None]
        if futures:
            self.transport.client.cancel(futures, force=True)

    def release(self) -> None:
        pass
