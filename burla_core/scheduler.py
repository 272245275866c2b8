"""The default scheduler: which inputs go to which node, and when.

    inputs (lazy) ──pickle as sent──► batch ──submit──► NodeSession (node A, slots a)
         ▲                              │     └───────► NodeSession (node B, slots b)
         │ requeued on node loss        │                     │
         └──────────── in_flight ◄──────┘     EventSink ◄─────┘ RESULTS / LOGS / ERROR / NODE_LOST
                                                  │
                                    run() yields events to the caller

Batches are sized by guided self-scheduling: remaining inputs ÷ (4 × slots), so that 10,000 tiny
inputs travel in a few dozen messages while the last batches shrink to one input and no slot
waits on a straggler batch. Each session holds at most two batches per slot, so a worker that
finishes always finds its next batch already on its node. Only the in-flight window is ever
pickled and held (at most about WINDOW_INPUTS inputs, however many slots): memory grows with
that window, not with the number of inputs.

`max_parallelism` is divided among the nodes' slots up front, so it holds exactly across nodes.
"""

from __future__ import annotations

import collections
import itertools
import math
import time
from typing import Any, Iterator

from .errors import NodeDisconnected
from .hookspecs import SchedulerRecord, hookimpl
from .interfaces import NodeSession, Provisioner, Scheduler, Transport
from .serialization import dumps_input
from .types import ERROR, LOGS, NODE_LOST, NOTICE, RESULTS, STARTED, EventSink, InputBatch, JobSpec, NodeInfo

MAX_BATCH_INPUTS = 2048
MAX_BATCH_BYTES = 8 * 1000 * 1000
# At most about this many inputs pickled and in flight at once, however many slots there are:
# with 10,000 slots, batches shrink so that memory follows this window, not the input count.
WINDOW_INPUTS = 100_000
BATCHES_PER_SLOT = 2
TICK_SECONDS = 0.1
STOP_SECONDS = 2.0
TICK = "tick"  # yielded when nothing happened for TICK_SECONDS (lets the caller redraw a spinner)


def divide_slots(nodes: list[NodeInfo], cap: int | None) -> dict[str, int]:
    """Slots per node, in total at most `cap`: round-robin so every node gets a share."""
    total = sum(node.slots for node in nodes)
    budget = total if cap is None else min(cap, total)
    given = {node.node_id: 0 for node in nodes}
    while budget > 0:
        progressed = False
        for node in nodes:
            if budget and given[node.node_id] < node.slots:
                given[node.node_id] += 1
                budget -= 1
                progressed = True
        if not progressed:
            break
    return {node_id: slots for node_id, slots in given.items() if slots > 0}


class JobProgress:
    """Counts the caller's progress line shows."""

    def __init__(self, total: int | None) -> None:
        self.total = total
        self.submitted = 0
        self.done = 0
        self.failed = 0
        self.slots = 0

    @property
    def running(self) -> int:
        return max(0, min(self.slots, self.submitted - self.done - self.failed))


class DefaultScheduler(Scheduler):
    def __init__(self) -> None:
        self.progress = JobProgress(None)

    def run(
        self,
        job: JobSpec,
        inputs: Iterator[tuple[int, Any]],
        input_count: int | None,
        provisioner: Provisioner,
        transport: Transport,
        prepickled: bool = False,
    ) -> Iterator[list]:
        progress = self.progress = JobProgress(input_count)
        nodes = provisioner.eligible_nodes(job.resources)
        if job.grow:
            nodes = provisioner.grow(job.resources, nodes)
        shares = divide_slots(nodes, job.max_parallelism)
        progress.slots = sum(shares.values())
        events = EventSink()
        sessions: dict[str, NodeSession] = {}
        lost: dict[str, str] = {}
        in_flight: dict[str, dict[int, dict[int, bytes]]] = {}  # node -> batch_id -> index -> payload
        owner_of_batch: dict[int, str] = {}
        batch_of_input: dict[int, int] = {}
        requeued: collections.deque = collections.deque()
        batch_ids = itertools.count()
        source = iter(inputs)
        exhausted = False
        remaining_hint = input_count

        try:
            for node in nodes:
                if node.node_id in shares:
                    sessions[node.node_id] = transport.open_session(node, job, shares[node.node_id], events)
                    in_flight[node.node_id] = {}

            def next_batch(size: int) -> list[tuple[int, bytes]]:
                nonlocal exhausted
                items: list[tuple[int, bytes]] = []
                size_bytes = 0
                while requeued and len(items) < size:
                    items.append(requeued.popleft())
                while not exhausted and len(items) < size and size_bytes < MAX_BATCH_BYTES:
                    try:
                        input_index, value = next(source)
                    except StopIteration:
                        exhausted = True
                        break
                    payload = value if prepickled else dumps_input(input_index, value)
                    size_bytes += len(payload)
                    items.append((input_index, payload))
                return items

            def fill() -> None:
                total_slots = sum(session.slots for session in sessions.values()) or 1
                # First one batch per slot on every node, then the read-ahead batches: a small
                # job reaches every node's slots instead of queueing on the first node.
                for per_slot in range(1, BATCHES_PER_SLOT + 1):
                    for node_id, session in sessions.items():
                        if not fill_node(node_id, session, per_slot * session.slots, total_slots):
                            return

            def fill_node(node_id: str, session: NodeSession, limit: int, total_slots: int) -> bool:
                """Give `session` batches until it holds `limit`; False once inputs ran out."""
                nonlocal remaining_hint
                batches = in_flight[node_id]
                while len(batches) < limit and (requeued or not exhausted):
                    if remaining_hint is None:
                        size = 64
                    else:
                        size = math.ceil(max(remaining_hint, 1) / (4 * total_slots))
                    size = min(size, WINDOW_INPUTS // (BATCHES_PER_SLOT * total_slots))
                    items = next_batch(max(1, min(size, MAX_BATCH_INPUTS)))
                    if not items:
                        return False
                    batch_id = next(batch_ids)
                    batches[batch_id] = dict(items)
                    owner_of_batch[batch_id] = node_id
                    for input_index, _ in items:
                        batch_of_input[input_index] = batch_id
                    progress.submitted += len(items)
                    if remaining_hint is not None:
                        remaining_hint = max(0, remaining_hint - len(items))
                    session.submit(InputBatch(batch_id, items))
                return True

            def settle(input_index: int) -> None:
                """An input is finished (result or error): drop what was kept to resend it."""
                batch_id = batch_of_input.pop(input_index, None)
                if batch_id is None:
                    return
                node_id = owner_of_batch[batch_id]
                batch = in_flight[node_id].get(batch_id)
                if batch is not None:
                    batch.pop(input_index, None)
                    if not batch:
                        del in_flight[node_id][batch_id]
                        del owner_of_batch[batch_id]

            def lose(node_id: str, reason: str) -> None:
                session = sessions.pop(node_id, None)
                if session is None:
                    return
                lost[node_id] = reason
                before = len(requeued)
                for batch_id, batch in in_flight.pop(node_id).items():
                    owner_of_batch.pop(batch_id, None)
                    for input_index, payload in batch.items():
                        batch_of_input.pop(input_index, None)
                        requeued.append((input_index, payload))
                progress.submitted -= len(requeued) - before
                try:
                    session.close()
                except Exception:
                    pass
                if not sessions:
                    unfinished = len(requeued)
                    raise NodeDisconnected(
                        "every node running this job was lost ("
                        + "; ".join(f"{name}: {why}" for name, why in lost.items())
                        + f"); {unfinished} input(s) were unfinished"
                    )
                progress.slots = sum(session.slots for session in sessions.values())

            fill()
            yield [STARTED, None, None]
            while True:
                if not requeued and exhausted and not any(in_flight.values()):
                    return
                event = events.get(TICK_SECONDS)
                if event is None:
                    yield [TICK, None, None]
                    continue
                while event is not None:
                    kind = event[0]
                    if kind == RESULTS:
                        for input_index, _ in event[2]:
                            settle(input_index)
                        progress.done += len(event[2])
                    elif kind == ERROR:
                        settle(event[2][0])
                        progress.failed += 1
                        yield from self._stop_after_error(sessions, events)
                    elif kind == NODE_LOST:
                        lose(event[1], event[2])
                    yield event
                    event = events.get_nowait()
                fill()
        finally:
            for session in sessions.values():
                try:
                    session.close()
                except Exception:
                    pass
            # A canceled job's calls stop within STOP_SECONDS; wait so that the caller returns
            # only once nothing of the job is running any more.
            deadline = time.monotonic() + STOP_SECONDS
            for session in sessions.values():
                wait_stopped = getattr(session, "wait_stopped", None)
                if wait_stopped is not None:
                    wait_stopped(max(0.0, deadline - time.monotonic()))
            provisioner.release_idle()


    def _stop_after_error(self, sessions: dict[str, NodeSession], events: EventSink) -> Iterator[list]:
        """The job failed: cancel it everywhere, and pass on the output its other calls wrote
        until they have stopped (within STOP_SECONDS), before the error itself."""
        for session in sessions.values():
            session.cancel()
        deadline = time.monotonic() + STOP_SECONDS
        while time.monotonic() < deadline:
            event = events.get(0.01)
            if event is not None and event[0] in (LOGS, NOTICE):
                yield event
            elif event is None and all(session.is_stopped() for session in sessions.values()):
                break
        while (event := events.get_nowait()) is not None:
            if event[0] in (LOGS, NOTICE):
                yield event


@hookimpl
def burla_register_schedulers(register) -> None:
    register(SchedulerRecord(name="default", factory=DefaultScheduler))
