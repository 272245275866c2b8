"""The default scheduler: which inputs go to which node, and when.

    Provisioner ──eligible_nodes──► first nodes ─┐     Membership: NODE_JOINED / NODE_LOST
         └──watch_job──(grow=True: boots)────────┼──────────────────────────────┐
                                                 ▼                              │
    InputFeed (lazy, pickled as sent) ──batch──► NodeWork(node A) ─submit─► NodeSession ─┐
         ▲                                       NodeWork(node B) ─submit─► NodeSession ─┤
         │ a lost node's unfinished inputs                                              │
         └───────────────── outstanding ◄──── settle ◄── EventSink ◄────────────────────┘
                                                              RESULTS / LOGS / ERROR / NODE_LOST
                                     run() yields events to the caller

A job starts on whatever nodes are ready and takes each node that joins the moment it joins:
the remaining inputs spread onto it through the batches it is given. `max_parallelism` is a
budget of slots shared by all the job's nodes, whenever they join. Each node holds at most two
batches per slot, so a worker that finishes always finds its next batch at hand, and only that
window of inputs is ever pickled and held: memory follows the window, not the input count.

Exactly once: every sent input is kept until its result or error arrives; a result for an input
not outstanding (a duplicate) and anything a node sends after it was declared lost are dropped;
a lost node's unfinished inputs are sent again elsewhere.
"""

from __future__ import annotations

import heapq
import logging
import threading
import time
from typing import Any, Iterator

from .errors import NodeDisconnected, NodesFailedToBoot, NoNodes
from .feed import BATCHES_PER_SLOT, InputFeed
from .hookspecs import SchedulerRecord, hookimpl
from .interfaces import Provisioner, Scheduler, Transport
from .nodework import FIRST_BATCH_INPUTS, NodeWork, divide_slots, even_level
from .types import (
    ERROR,
    GROWTH_ENDED,
    LOGS,
    NODE_JOINED,
    NODE_LOST,
    NODE_STATUS,
    NOTICE,
    RESULTS,
    STARTED,
    TICK,
    EventSink,
    InputBatch,
    JobProgress,
    JobSpec,
    Membership,
    NodeInfo,
)

log = logging.getLogger("burla.scheduler")

TICK_SECONDS = 0.1
STOP_SECONDS = 2.0  # after an error, how long the other calls get to stop (their output still arrives)
WAIT_FOR_NODES_SECONDS = 30 * 60.0  # a job with no node and growth that never ends fails after this


class ScheduledJob:
    """One run of the default scheduler: the state of a job and the named steps that change it."""

    def __init__(
        self, job: JobSpec, feed: InputFeed, provisioner: Provisioner, transport: Transport, progress: JobProgress
    ) -> None:
        self.job = job
        self.feed = feed
        self.provisioner = provisioner
        self.transport = transport
        self.progress = progress
        self.events = EventSink()
        self.membership: Membership | None = None
        self.working: dict[str, NodeWork] = {}  # node_id -> its work, for nodes still in the job
        self.spare: list[NodeInfo] = []  # joined, but max_parallelism left them no slot (yet)
        self.lost: dict[str, str] = {}  # node_id -> why
        self.owner: dict[int, tuple[NodeWork, int]] = {}  # outstanding input -> (node work, batch_id)
        self.boot_failures: list[str] = []
        self.next_batch_id = 0
        self.slot_budget = job.max_parallelism  # None: no cap
        self.waiting_since: float | None = None

    # --- nodes ---------------------------------------------------------------------------------

    def start(self) -> None:
        if type(self.transport).prepare is not Transport.prepare:  # no thread per job for nothing
            threading.Thread(target=self._prepare, name="burla-prepare", daemon=True).start()
        nodes = self.provisioner.eligible_nodes(self.job.resources)
        shares = divide_slots(nodes, self.job.max_parallelism)
        used = sum(shares.values())
        if self.slot_budget is not None:
            self.slot_budget -= used
        for node in nodes:
            if node.node_id in shares:
                self._open(node, shares[node.node_id])
            else:
                self.spare.append(node)
        wanted = max(0, min(self._inputs_hint(), self.job.max_parallelism or 1 << 62) - used)
        self.membership = Membership(self.events, wanted_slots=wanted, growing=self.job.grow)
        self.provisioner.watch_job(self.job, list(nodes), self.membership)
        # With grow=True the run's events say how growth went, even if it has already ended
        # (every boot failed at once): GROWTH_ENDED carries the reasons (see growth_ended).
        if not self.working and not self.job.grow and self.feed.has_more():
            raise NoNodes(f"no node is available to run {self.job.function_name}; start one, or call with grow=True")

    def _prepare(self) -> None:
        try:
            self.transport.prepare(self.job)
        except Exception:  # open_session meets the same problem and reports it
            log.debug("preparing the transport for job %s failed", self.job.job_id, exc_info=True)

    def _inputs_hint(self) -> int:
        hint = self.feed.count_hint
        return hint if hint is not None and hint > 0 else 1 << 62

    def _open(self, node: NodeInfo, slots: int) -> None:
        session = self.transport.open_session(node, self.job, slots, self.events)
        self.working[node.node_id] = NodeWork(node, session)
        self.progress.slots += session.slots
        self.progress.nodes = len(self.working)
        self.progress.node_status.pop(node.node_id, None)
        self.progress.waiting_for_nodes = False
        self.waiting_since = None

    def join(self, node: NodeInfo) -> None:
        """A node became ready mid-job: give it a share of the slot budget and work at once."""
        if node.node_id in self.working or node.node_id in self.lost:
            return
        share = node.slots if self.slot_budget is None else min(node.slots, self.slot_budget)
        if share < 1:
            self.spare.append(node)
            return
        if self.slot_budget is not None:
            self.slot_budget -= share
        self._open(node, share)

    def lose(self, node_id: str, reason: str) -> Iterator[list]:
        """A node was lost or left: its unfinished inputs go to the other nodes."""
        work = self.working.pop(node_id, None)
        if work is None:
            self.spare = [node for node in self.spare if node.node_id != node_id]
            return
        self.lost[node_id] = reason
        unfinished = []
        for batch in work.batches.values():
            for input_index, payload in batch.items():
                self.owner.pop(input_index, None)
                unfinished.append((input_index, payload))
        self.progress.running -= work.busy_slots
        self.progress.slots -= work.slots
        self.progress.nodes = len(self.working)
        work.batches.clear()
        work.sent.clear()
        self.feed.send_again(sorted(unfinished))
        self._close_session(work)
        if self.slot_budget is not None:
            self.slot_budget += work.slots
        yield [NOTICE, node_id, f"node {node_id} was lost ({reason}); its {len(unfinished)} unfinished input(s) go to the other nodes"]
        while self.spare and (self.slot_budget is None or self.slot_budget > 0):
            self.join(self.spare.pop(0))
        if not self.working:
            self._no_node_left()

    def _no_node_left(self) -> None:
        if self.membership is not None and self.membership.growing:
            self.progress.waiting_for_nodes = True
            self.waiting_since = self.waiting_since or time.monotonic()
            return
        if not self.feed.has_more() and not self.owner:
            return
        unfinished = len(self.owner) + (0 if self.feed.exhausted else 1)
        if not self.lost:
            if self.boot_failures:
                raise NodesFailedToBoot(
                    f"no node could be booted for {self.job.function_name}: " + "; ".join(self.boot_failures)
                )
            raise NoNodes(f"no node became available to run {self.job.function_name}")
        raise NodeDisconnected(
            "every node running this job was lost ("
            + "; ".join(f"{name}: {why}" for name, why in self.lost.items())
            + (f"; failed boots: {'; '.join(self.boot_failures)}" if self.boot_failures else "")
            + f"); {'at least ' if not self.feed.exhausted else ''}{unfinished} input(s) were unfinished"
        )

    def growth_ended(self, failures: list[str]) -> Iterator[list]:
        self.boot_failures.extend(failures)
        if failures and self.working:
            yield [NOTICE, None, f"{len(failures)} node(s) failed to boot; going on with the others: " + "; ".join(failures)]
        self.progress.node_status.clear()
        if not self.working:
            self._no_node_left()

    def _close_session(self, work: NodeWork) -> None:
        try:
            work.session.close()
        except Exception:  # logged, never swallowed silently: the job itself goes on
            log.warning("closing the session of node %s failed", work.node.node_id, exc_info=True)

    # --- inputs --------------------------------------------------------------------------------

    def fill(self) -> None:
        """Give every node batches up to BATCHES_PER_SLOT per slot: first one per slot on every
        node, then the read-ahead ones, so a small job reaches every node's slots."""
        if not self.working:
            return
        total_slots = sum(work.slots for work in self.working.values()) or 1
        if self.membership is not None and self.membership.growing:
            total_slots += self.membership.expected_slots  # leave work for the nodes on their way
        feed = self.feed
        even = self._even_plan()
        for per_slot in range(1, BATCHES_PER_SLOT + 1):
            for work in list(self.working.values()):
                limit = per_slot * work.slots
                while len(work.batches) < limit:
                    if not feed.has_more():
                        return self._source_done()
                    if even is not None:  # what keeps its first free slot busy until the even end
                        level, free = even[0], even[1][work.node.node_id]
                        if free[0] >= level:
                            break  # its slots are busy past it: nothing more for this node now
                        size = min(max(1, round((level - free[0]) / work.pace)), work.limit)
                    elif not work.limit:  # a node's first batches: small, until it shows its pace
                        size = feed.batch_size(total_slots)
                        work.limit = max(min(size, FIRST_BATCH_INPUTS), size // 8)
                        size = min(size, work.limit)
                    else:  # then cut as its session asks
                        size = min(max(feed.batch_size(total_slots, work.session.batch_split), work.floor), work.limit)
                    items = feed.take(size)
                    if not items:
                        return self._source_done()
                    self._send(work, items)
                    if even is not None:
                        heapq.heapreplace(free, free[0] + len(items) * work.pace)

    def _even_plan(self) -> tuple[float, dict[str, list[float]]] | None:
        """For sessions that end a job evenly (NodeSession.even_tail), once every node has shown
        its pace and the inputs left are known: the moment all slots would run dry with the rest
        spread over them, and each node's slots' free times (heaps, updated as batches go)."""
        works = list(self.working.values())
        if not all(work.session.even_tail and work.pace > 0 for work in works):  # a pace: a batch settled
            return None
        if self.membership is not None and self.membership.growing:
            return None  # nodes on their way will take part of it
        remaining = self.feed.remaining()
        if not remaining or remaining > 2 * sum(work.slots * work.limit for work in works):
            return None  # none, or so many that every batch is full-size either way
        now = time.monotonic()
        free = {work.node.node_id: work.free_times(now) for work in works}
        slots = [(ends, work.pace) for work in works for ends in free[work.node.node_id]]
        return even_level(slots, remaining), free

    def _source_done(self) -> None:
        if self.feed.exhausted:
            self.progress.total = self.feed.read  # what iterating produced, whatever len() said

    def _send(self, work: NodeWork, items: list[tuple[int, bytes]]) -> None:
        batch_id = self.next_batch_id
        self.next_batch_id += 1
        batches = work.batches
        if len(batches) < work.session.slots:
            self.progress.running += 1  # one more of its slots has a batch (see busy_slots)
        batches[batch_id] = dict(items)
        work.record_sent(batch_id, len(items), time.monotonic())
        entry = (work, batch_id)
        owner = self.owner
        for input_index, _ in items:
            owner[input_index] = entry
        work.session.submit(InputBatch(batch_id, items))

    def settle(self, input_index: int) -> bool:
        """An input finished: True the first time, False for one not outstanding (a duplicate)."""
        entry = self.owner.pop(input_index, None)
        if entry is None:
            return False
        work, batch_id = entry
        batches = work.batches
        batch = batches[batch_id]
        del batch[input_index]
        if not batch:
            del batches[batch_id]
            if len(batches) < work.session.slots:
                self.progress.running -= 1  # one of its slots has no batch left
            work.batch_settled(batch_id, time.monotonic())
        return True

    def finished(self) -> bool:
        if self.owner or self.feed.has_more():
            return False
        self.progress.total = self.feed.read  # what iterating produced, whatever len() said
        return True

    # --- events --------------------------------------------------------------------------------

    def handle(self, event: list) -> Iterator[list]:
        """What one event changes, and the events to pass on to the caller."""
        kind, node_id = event[0], event[1]
        if node_id in self.lost and kind != NOTICE:
            return  # a node declared lost may still talk: nothing it says counts any more
        if kind == RESULTS:
            settle = self.settle
            kept = [entry for entry in event[2] if settle(entry[0])]
            if kept:
                self.progress.done += len(kept)
                yield [RESULTS, node_id, kept] if len(kept) != len(event[2]) else event
        elif kind == LOGS:
            yield event
        elif kind == ERROR:
            if self.settle(event[2][0]):
                self.progress.failed += 1
                if self.job.raise_errors:
                    yield from self.stop_after_error()
                yield event
        elif kind == NODE_LOST:
            yield from self.lose(node_id, event[2])
        elif kind == NODE_JOINED:
            self.join(event[2])
        elif kind == NODE_STATUS:
            if event[2]:
                self.progress.node_status[node_id] = event[2]
            else:
                self.progress.node_status.pop(node_id, None)
        elif kind == GROWTH_ENDED:
            yield from self.growth_ended(event[2])
        elif kind == NOTICE:
            yield event

    def stop_after_error(self) -> Iterator[list]:
        """The job failed: cancel it everywhere, and pass on the output its other calls wrote
        until they have stopped (within STOP_SECONDS), before the error itself."""
        sessions = [work.session for work in self.working.values()]
        for session in sessions:
            session.cancel()
        deadline = time.monotonic() + STOP_SECONDS
        while time.monotonic() < deadline:
            event = self.events.get(0.01)
            if event is None:
                if all(session.is_stopped() for session in sessions):
                    break
            elif event[0] in (LOGS, NOTICE) and event[1] not in self.lost:
                yield event
        while (event := self.events.get_nowait()) is not None:
            if event[0] in (LOGS, NOTICE) and event[1] not in self.lost:
                yield event

    def check_waiting(self) -> None:
        if self.waiting_since is not None and time.monotonic() - self.waiting_since > WAIT_FOR_NODES_SECONDS:
            raise NodesFailedToBoot(
                f"no node became ready for {self.job.function_name} within {WAIT_FOR_NODES_SECONDS / 60:.0f} minutes"
                + (f" (failed boots: {'; '.join(self.boot_failures)})" if self.boot_failures else "")
            )

    # --- the run -------------------------------------------------------------------------------

    def run(self) -> Iterator[list]:
        try:
            self.start()
            if not self.working:  # waiting for the first node to join: is there any work at all?
                self.feed.send_again(self.feed.take(1))
                self.progress.waiting_for_nodes = self.feed.has_more()
                self.waiting_since = time.monotonic()
            self.fill()
            yield [STARTED, None, None]
            events = self.events
            while not self.finished():
                event = events.get(TICK_SECONDS)
                if event is None:
                    self.check_waiting()
                    yield [TICK, None, None]
                    continue
                while event is not None:
                    yield from self.handle(event)
                    event = events.get_nowait()
                self.fill()
        finally:
            self.shutdown()

    def shutdown(self) -> None:
        """Whatever ended the job: stop growth, close every session, wait (within STOP_SECONDS)
        until nothing of the job runs, and let idle nodes go."""
        if self.membership is not None:
            self.membership.close()
        works = list(self.working.values())
        for work in works:
            self._close_session(work)
        deadline = time.monotonic() + STOP_SECONDS
        for work in works:
            try:
                work.session.wait_stopped(max(0.0, deadline - time.monotonic()))
            except Exception:
                log.warning("waiting for node %s to stop failed", work.node.node_id, exc_info=True)
        try:
            self.provisioner.release_idle()
        finally:
            self.transport.close()


class DefaultScheduler(Scheduler):
    def run(
        self,
        job: JobSpec,
        inputs: Iterator[tuple[int, Any]],
        input_count: int | None,
        provisioner: Provisioner,
        transport: Transport,
        prepickled: bool = False,
    ) -> Iterator[list]:
        self.progress = JobProgress(total=input_count)
        feed = InputFeed(inputs, input_count, prepickled)
        return ScheduledJob(job, feed, provisioner, transport, self.progress).run()


@hookimpl
def burla_register_schedulers(register) -> None:
    register(SchedulerRecord(name="default", factory=DefaultScheduler))
