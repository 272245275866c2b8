"""The local transport: batches go straight to this process's worker pool through pipes."""

from __future__ import annotations

import os
import sys

from burla_core.interfaces import NodeSession, Transport
from burla_core.machine import GIB
from burla_core.pool import WorkerPool, shared_pool
from burla_core.types import EventSink, InputBatch, JobSpec, NodeInfo


class LocalSession(NodeSession):
    def __init__(self, pool: WorkerPool, node: NodeInfo, job: JobSpec, slots: int, events: EventSink) -> None:
        self.pool = pool
        self.node_id = node.node_id
        self.slots = slots
        self.pool_job = pool.open_job(
            job.function_bytes,
            slots,
            events.put,
            node_id=node.node_id,
            env=caller_state(in_container=node.image is not None),
            ram_limit_bytes=None if node.image else job.resources.func_ram * GIB,  # engines limit containers
            gpu_indices=[gpu.index for gpu in node.gpus] if job.resources.func_gpu else None,
        )

    def submit(self, batch: InputBatch) -> None:
        self.pool.submit(self.pool_job, batch.batch_id, batch.items)

    def cancel(self) -> None:
        self.pool.cancel(self.pool_job)

    def close(self) -> None:
        self.pool.close(self.pool_job)

    def is_stopped(self) -> bool:
        return self.pool.is_stopped(self.pool_job)

    def wait_stopped(self, timeout: float) -> bool:
        return self.pool.wait_closed(self.pool_job, timeout)


def caller_state(in_container: bool) -> dict:
    """What a warm worker needs to see this process as of this call: its current directory
    and, for a worker on this machine, its sys.path and environment (a container has its own;
    it shares only the directory). See burla_core.worker.apply_caller_state."""
    if in_container:
        return {"BURLA_CWD": os.getcwd()}
    return {"BURLA_CWD": os.getcwd(), "BURLA_SYS_PATH": list(sys.path), "BURLA_ENVIRON": _environment()}


_last_environment: tuple[dict | None, dict] = (None, {})


def _environment() -> dict:
    """dict(os.environ), decoded again only when it changed: decoding every variable costs
    ~1 µs each, per call, while comparing the raw (encoded) mapping is one C-level dict compare."""
    global _last_environment
    raw = getattr(os.environ, "_data", None)  # CPython's encoded store; compared, never changed
    if not isinstance(raw, dict):
        return dict(os.environ)
    cached_raw, cached = _last_environment
    if raw != cached_raw:
        cached_raw, cached = dict(raw), dict(os.environ)
        _last_environment = cached_raw, cached
    return cached


class LocalTransport(Transport):
    def open_session(self, node: NodeInfo, job: JobSpec, slots: int, events: EventSink) -> NodeSession:
        if node.image is not None:
            from .containers import container_pool

            pool = container_pool(node.address, node.image, job.resources.func_ram)
            return LocalSession(pool, node, job, slots, events)
        return LocalSession(shared_pool(), node, job, slots, events)
