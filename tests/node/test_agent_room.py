"""A job's room on its node (burla_core.node.jobs.AgentJob): every batch admitted to the pool gives
its room back exactly once, however its settling and the job's cancel interleave."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

from burla_core.node.jobs import AgentJob
from burla_core.node.protocol import JobRequest
from burla_core.types import RESULTS


def _job(loop) -> AgentJob:
    request = JobRequest("job-1", b"function", "f", slots=2, func_cpu=1, func_ram=1, func_gpu=None, image=None,
                         python="3.11", burla="0")
    job = AgentJob(loop, request, "digest", 2, [])
    job.pool_job = SimpleNamespace(slots=1)  # what take_batch adjusts
    returned = []
    job.on_batches_settled = lambda _job, count: returned.append(count)
    job.returned = returned
    return job


def test_a_batch_that_settles_just_before_a_cancel_gives_its_room_back():
    # The pool's reader settles a batch (its wake-up is scheduled on the event loop), and before
    # the loop runs it, the caller's cancel ends the job: that batch's room must still come back.
    loop = asyncio.new_event_loop()
    try:
        job = _job(loop)
        job.accept(0, [(0, b"a")], 1)
        job.accept(1, [(1, b"b")], 1)
        job.take_batch()
        job.take_batch()  # two calls' room taken on the node
        job.on_pool_event([RESULTS, "node", [(0, b"result")]])  # batch 0 left the pool
        owed = job.mark_canceled()  # the cancel, before the loop ran the wake-up
        loop.run_until_complete(asyncio.sleep(0))  # now the wake-up runs
        given = owed + sum(job.returned)
        assert given == 2, f"two batches took room and {given} gave it back (cancel owed {owed}, wake-up {job.returned})"
    finally:
        loop.close()


def test_a_batch_that_settles_before_its_wake_up_and_no_cancel_gives_its_room_back_once():
    loop = asyncio.new_event_loop()
    try:
        job = _job(loop)
        job.accept(0, [(0, b"a")], 1)
        job.take_batch()
        job.on_pool_event([RESULTS, "node", [(0, b"result")]])
        loop.run_until_complete(asyncio.sleep(0))
        owed = job.mark_canceled()  # the job ends after its wake-up: nothing more is owed
        assert sum(job.returned) + owed == 1, f"wake-up {job.returned}, cancel owed {owed}"
    finally:
        loop.close()
