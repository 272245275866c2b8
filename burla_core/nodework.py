"""One node of a job as the default scheduler sees it: the slots it is given, the batches it
holds (each input kept until it settles), and the pace that sizes its next batches."""

from __future__ import annotations

import collections
import heapq
import math
from dataclasses import dataclass, field

from .interfaces import NodeSession
from .types import NodeInfo

FIRST_BATCH_INPUTS = 4  # a node's first batches hold at most this, or an eighth of the full size


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


def even_level(slots: list[tuple[float, float]], inputs: int) -> float:
    """When `inputs` more, spread over `slots` ((seconds until it runs dry, seconds an input
    takes there) each) so that all of them run dry at once, would be done: the level T with
    sum(max(0, T - free) / pace) == inputs. Slots busy past T get none."""
    level = 0.0
    rate = 0.0  # inputs a second of the slots below the level
    backlog = 0.0  # sum of free / pace over those slots
    ordered = sorted(slots)
    for number, (free, pace) in enumerate(ordered):
        rate += 1 / pace
        backlog += free / pace
        level = (inputs + backlog) / rate
        if number + 1 == len(ordered) or level <= ordered[number + 1][0]:
            break
    return level


@dataclass(eq=False)
class NodeWork:
    """One node of the job: its session and the batches it holds, each input kept until it settles."""

    node: NodeInfo
    session: NodeSession
    batches: dict[int, dict[int, bytes]] = field(default_factory=dict)  # batch_id -> index -> payload
    # batch_id -> (sent at, its size, the settle after which it can start: 0 when a slot was free)
    sent: dict[int, tuple[float, int, int]] = field(default_factory=dict)
    limit: int = 0  # the most inputs its next batch may hold (0: not known yet; see batch_settled)
    floor: int = 1  # the fewest its next batch should hold (the session's min_batch_seconds at its pace)
    settled: int = 0  # batches of this node settled so far...
    settle_times: collections.deque = field(default_factory=lambda: collections.deque(maxlen=256))  # ...the last ones' times
    pace: float = 0.0  # seconds an input takes on one of its slots, as its last batch showed (0: not known)

    def record_sent(self, batch_id: int, size: int, now: float) -> None:
        """A batch goes out; behind it are the ones the node already holds beyond its slots
        (it holds a read-ahead batch per slot): it can start only once that many have settled."""
        ahead = len(self.batches) - 1 - self.session.slots  # its own entry is already in batches
        self.sent[batch_id] = (now, size, self.settled + ahead + 1 if ahead >= 0 else 0)

    def _started_at(self, sent_at: float, start_after: int) -> float:
        """When a batch could start: when it was sent, or when the settle it waited for came."""
        if start_after == 0:
            return sent_at
        back = self.settled - start_after  # how many settles ago that was
        if back < 0:  # batches settled out of order: the latest settle is the best guess
            back = 0
        times = self.settle_times
        return max(sent_at, times[-1 - back] if back < len(times) else sent_at)

    def free_times(self, now: float) -> list[float]:
        """Seconds from `now` until each of its slots has run what the node holds, as a heap:
        batches start in the order they were sent, on whichever slot frees first, and each
        input takes `pace`. A batch that has started ends `pace` x its size after its start:
        counting its inputs not yet settled would count those whose results are on their way
        (an engine sends them in frames, 50 ms apart)."""
        free = [-math.inf] * self.session.slots  # ends in the past while batches are placed
        pace = self.pace
        for batch_id in self.batches:
            sent_at, size, start_after = self.sent[batch_id]
            if self.settled >= start_after:  # it could start: it runs, or waits only for its slot
                start = max(free[0], self._started_at(sent_at, start_after) - now)
            else:
                start = max(free[0], 0.0)
            heapq.heapreplace(free, start + size * pace)
        free = [max(0.0, end) for end in free]
        heapq.heapify(free)
        return free

    @property
    def slots(self) -> int:
        return self.session.slots

    @property
    def busy_slots(self) -> int:
        """Slots working now, as far as the caller can tell: one per batch the node holds."""
        return min(self.session.slots, len(self.batches))

    def batch_settled(self, batch_id: int, now: float) -> None:
        """Adjust the batch limit to the node's pace. A batch that came back within its
        session's max_batch_seconds lets the next ones be batch_growth times bigger, up to what
        fits in max_batch_seconds at the pace it showed; one a little slower trims them to what
        fits, and one over twice as slow (a slow node, or longer calls) shrinks them to what fits
        in a quarter of it. A new node starts at an eighth of the full batch size, or
        FIRST_BATCH_INPUTS (ScheduledJob.fill), so a slow or new node never sits on a long batch
        while others run dry, and a fast one reaches full-size batches in a few rounds. Capping
        the growth at what fits keeps a steady node's batches from overshooting the mark and
        collapsing (120 inputs of 10 ms, then 24, then 48, ...)."""
        sent_at, size, start_after = self.sent.pop(batch_id)
        # Time in the node's queue is not its pace: count from when a slot could take the batch.
        took = now - self._started_at(sent_at, start_after)
        self.settled += 1
        self.settle_times.append(now)
        if took > 0:
            self.pace = took / size
        session = self.session
        wanted = session.min_batch_seconds
        if wanted and took > 0:
            self.floor = max(1, int(wanted * size / took))
        longest = session.max_batch_seconds
        fits = max(1, int(size * longest / took)) if took > 0 else session.batch_growth * size
        if took <= longest:
            self.limit = max(self.limit, min(session.batch_growth * size, fits))
        elif took <= 2 * longest:  # a little over (a batch cut to fit, and some jitter): trim
            self.limit = min(self.limit, fits)
        else:
            self.limit = max(1, fits // 4)
