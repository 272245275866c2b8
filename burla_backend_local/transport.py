"""The local transport: batches go straight to this process's worker pool through pipes."""

from __future__ import annotations

import os

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
            env={"BURLA_CWD": os.getcwd()},
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


class LocalTransport(Transport):
    def open_session(self, node: NodeInfo, job: JobSpec, slots: int, events: EventSink) -> NodeSession:
        if node.image is not None:
            from .containers import container_pool

            pool = container_pool(node.address, node.image, job.resources.func_ram)
            return LocalSession(pool, node, job, slots, events)
        return LocalSession(shared_pool(), node, job, slots, events)
