"""A job's inputs as the scheduler takes them: read lazily, pickled as they are sent, inputs to
send again first, in batches sized by guided self-scheduling.

Batch sizes: remaining inputs ÷ (4 × slots), so that 10,000 tiny inputs travel in a few dozen
messages while the last batches shrink to one input and no slot waits on a straggler batch. When
the number of inputs is not known (a generator) or `len()` turned out wrong, the inputs read so
far stand in for the remaining ones: the first batches hold one input each, so a short generator
spreads over every slot, and sizes grow as the source proves long. A batch is never held back
waiting on a slow source: once it has an input and BATCH_READ_SECONDS have passed, it goes.
"""

from __future__ import annotations

import collections
import math
import time
from typing import Any, Iterable

from .serialization import dumps_input

MAX_BATCH_INPUTS = 2048
MAX_BATCH_BYTES = 8 * 1000 * 1000
# At most about this many inputs pickled and in flight at once, however many slots there are:
# with 10,000 slots, batches shrink so that memory follows this window, not the input count.
WINDOW_INPUTS = 100_000
BATCHES_PER_SLOT = 2
BATCH_READ_SECONDS = 0.05


class InputFeed:
    """The inputs not yet sent: those to send again (a lost node's), then the source's."""

    def __init__(self, inputs: Iterable[tuple[int, Any]], input_count: int | None, prepickled: bool) -> None:
        self._source = iter(inputs)
        self._prepickled = prepickled
        self.count_hint = input_count
        self.read = 0  # inputs taken from the source so far
        self.exhausted = False
        self._again: collections.deque[tuple[int, bytes]] = collections.deque()

    def has_more(self) -> bool:
        return bool(self._again) or not self.exhausted

    def send_again(self, items: Iterable[tuple[int, bytes]]) -> None:
        """Inputs that were sent but not finished (their node was lost): they go out first."""
        self._again.extend(items)

    def remaining(self) -> int | None:
        """Inputs still to send, where len() said how many there are and has not proven wrong."""
        if self.count_hint is None:
            return None
        if self.exhausted:
            return len(self._again)
        unread = self.count_hint - self.read
        return unread + len(self._again) if unread > 0 else None  # None: more came than len() said

    def batch_size(self, total_slots: int, split: int = 4) -> int:
        """The size of the next batch: the remaining inputs cut into `split` batches per slot."""
        slots = max(1, total_slots)
        remaining = None if self.count_hint is None else self.count_hint - self.read
        if remaining is None or remaining <= 0:  # unknown, or len() was wrong: estimate
            remaining = self.read
        size = math.ceil(max(remaining, 1) / (max(1, split) * slots))
        size = min(size, WINDOW_INPUTS // (BATCHES_PER_SLOT * slots), MAX_BATCH_INPUTS)
        return max(1, size)

    def take(self, size: int) -> list[tuple[int, bytes]]:
        """Up to `size` inputs (fewer if the source is slow or ends), pickled."""
        items: list[tuple[int, bytes]] = []
        again = self._again
        while again and len(items) < size:
            items.append(again.popleft())
        if self.exhausted or len(items) >= size:
            return items
        source = self._source
        prepickled = self._prepickled
        size_bytes = 0
        deadline = time.monotonic() + BATCH_READ_SECONDS
        while len(items) < size and size_bytes < MAX_BATCH_BYTES:
            try:
                input_index, value = next(source)
            except StopIteration:
                self.exhausted = True
                break
            payload = value if prepickled else dumps_input(input_index, value)
            self.read += 1
            size_bytes += len(payload)
            items.append((input_index, payload))
            if time.monotonic() > deadline:
                break
        return items
