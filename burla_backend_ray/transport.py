"""The ray transport: each batch is one Ray streaming-generator task pinned to its node, asking
Ray for func_cpu CPUs, func_ram GiB of memory and the GPU; every frame it yields reaches the
caller while it runs.

    RaySession.launch ── run_batch_stream.options(node affinity, resources).remote() ──► Ray node
    EventSink ◄── RaySession.deliver ◄── reader thread: ray.wait(every running generator) ◄──┘

The job's function is put in Ray's object store once per job and named by every task. Cancel
is Ray's polite cancel (the task stops its calls and ends), then force=True for a task still
there after FORCE_CANCEL_SECONDS.
"""

from __future__ import annotations

import logging
import os
import threading
import time

from burla_core.engine.session import EngineSession, EngineTask
from burla_core.interfaces import NodeSession, Transport
from burla_core.machine import GIB
from burla_core.types import EventSink, JobSpec, NodeInfo

from .connection import connect, gcs_address
from .remote import NESTED_ENV, run_batch_stream
from .settings import ADDRESS_ENV, RaySettings

log = logging.getLogger("burla.ray")

READ_SECONDS = 0.05
FORCE_CANCEL_SECONDS = 3.0

_remote_function = None


def remote_batch_function():
    """run_batch_stream as a Ray remote function (made once: Ray exports it to the cluster)."""
    global _remote_function
    if _remote_function is None:
        import ray

        # Burla retries a lost input itself (once); Ray must not run a batch again behind its back.
        _remote_function = ray.remote(num_returns="streaming", max_retries=0)(run_batch_stream)
    return _remote_function


class RayTransport(Transport):
    def __init__(self, options: dict | None = None) -> None:
        super().__init__(options)
        self.settings = RaySettings.from_options(self.options)
        self._lock = threading.Lock()
        self._running: dict[object, tuple[RaySession, EngineTask]] = {}  # generator -> its task
        self._reader: threading.Thread | None = None
        self._closed = False
        self.function_ref = None
        self.env: dict[str, str] = {}

    def open_session(self, node: NodeInfo, job: JobSpec, slots: int, events: EventSink) -> NodeSession:
        if self.function_ref is None:
            import ray

            connect(self.settings.address)
            self.function_ref = ray.put(job.function_bytes)
            # A call made inside one of this job's calls connects to the same cluster.
            self.env = {"BURLA_BACKEND": "ray", ADDRESS_ENV: gcs_address()}
            self._reader = threading.Thread(target=self._read, name="burla-ray-frames", daemon=True)
            self._reader.start()
        return RaySession(self, node, job, slots, events)

    def track(self, generator, session: "RaySession", task: EngineTask) -> None:
        with self._lock:
            self._running[generator] = (session, task)

    def _read(self) -> None:
        import ray

        while True:
            with self._lock:
                if self._closed and not self._running:
                    return
                generators = list(self._running)
            if not generators:
                time.sleep(READ_SECONDS)
                continue
            try:
                ready, _ = ray.wait(generators, num_returns=1, timeout=READ_SECONDS, fetch_local=True)
            except Exception:
                log.warning("waiting on Ray tasks failed", exc_info=True)
                time.sleep(READ_SECONDS)
                continue
            for generator in ready:
                self._take(generator)

    def _take(self, generator) -> None:
        """The next frame of a ready generator, or its end."""
        import ray
        from ray.exceptions import TaskCancelledError

        with self._lock:
            entry = self._running.get(generator)
        if entry is None:
            return
        session, task = entry
        failure = None
        try:
            ref = next(generator)
            frame = ray.get(ref)
        except StopIteration:
            frame = None
        except TaskCancelledError:
            frame = None
        except Exception as error:  # the task failed on the engine: its worker process died, its node went away
            frame = None
            failure = f"{type(error).__name__}: {str(error).strip().splitlines()[-1] if str(error).strip() else ''}"
        if frame is not None:
            session.deliver(task, frame)
            return
        with self._lock:
            self._running.pop(generator, None)
        session.ended(task, failure)

    def close(self) -> None:
        with self._lock:
            self._closed = True
        self.function_ref = None


class RaySession(EngineSession):
    def __init__(self, transport: RayTransport, node: NodeInfo, job: JobSpec, slots: int, events: EventSink) -> None:
        super().__init__(node.node_id, slots, events)
        self.transport = transport
        self.ram_limit_bytes = job.resources.func_ram * GIB
        nested = bool(os.environ.get(NESTED_ENV))
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        options: dict = {
            "scheduling_strategy": NodeAffinitySchedulingStrategy(node.node_id, soft=False),
            # A call made inside a Burla call on Ray runs on the resources its caller holds while
            # it waits (as Ray lends a task's CPUs to what it waits on); otherwise it would wait
            # for them forever.
            "num_cpus": 0 if nested else job.resources.func_cpu,
            "memory": 0 if nested else job.resources.func_ram * GIB,
            "name": f"burla:{job.function_name}"[:100],
        }
        if job.resources.func_gpu is not None:
            options["num_gpus"] = 1
        self.options = options
        # Ray runs at most node.slots of these tasks at once on the node (its CPU and memory
        # resources are what node.slots was computed from) and starts a queued one as soon as any
        # of them ends. Not for a nested call (it asks for no resources) or a GPU job (the node's
        # matching GPUs may be fewer than its GPU resource), nor when this job has only part of
        # the node: then Ray would run the extra tasks at once.
        if not nested and job.resources.func_gpu is None and slots == node.slots:
            self.read_ahead = slots

    def launch(self, task: EngineTask) -> None:
        transport = self.transport
        generator = remote_batch_function().options(**self.options).remote(
            transport.function_ref, list(task.items.items()), transport.env, self.ram_limit_bytes
        )
        task.handle = generator
        task.started = True  # Ray reports a task that never ran as canceled, so its end tells the truth
        transport.track(generator, self, task)

    def stop(self, tasks: list[EngineTask]) -> None:
        import ray

        generators = [task.handle for task in tasks if task.handle is not None]
        for generator in generators:
            try:
                ray.cancel(generator, force=False)
            except Exception:
                log.debug("canceling a Ray task failed", exc_info=True)
        if generators:
            timer = threading.Timer(FORCE_CANCEL_SECONDS, self._force, args=(tasks,))
            timer.daemon = True
            timer.start()

    def _force(self, tasks: list[EngineTask]) -> None:
        import ray

        with self.transport._lock:
            still = [task.handle for task in tasks if task.handle in self.transport._running]
        for generator in still:
            try:
                ray.cancel(generator, force=True)
            except Exception:
                log.debug("force-canceling a Ray task failed", exc_info=True)
