"""How busy a node's machine is, for the dashboard's nodes chart: CPU use between two samples
(from /proc/stat) and memory in use (from /proc/meminfo, MemAvailable). Linux only: elsewhere
every value is None, and the dashboard shows a dash."""

from __future__ import annotations

import time
from collections import deque
from pathlib import Path
from typing import Any

from .. import schema

PROC = Path("/proc")


def _cpu_times() -> tuple[int, int] | None:
    """(busy, total) jiffies since boot, or None off Linux."""
    try:
        fields = (PROC / "stat").read_text().splitlines()[0].split()[1:]
    except (OSError, IndexError):
        return None
    values = [int(v) for v in fields]
    idle = values[3] + (values[4] if len(values) > 4 else 0)  # idle + iowait
    return sum(values) - idle, sum(values)


def memory_percent() -> float | None:
    try:
        info = dict(line.split(":", 1) for line in (PROC / "meminfo").read_text().splitlines() if ":" in line)
        total = int(info["MemTotal"].split()[0])
        available = int(info["MemAvailable"].split()[0])
    except (OSError, KeyError, ValueError):
        return None
    return round(100.0 * (total - available) / total, 1) if total else None


class UsageSampler:
    """Samples since the last call; keeps the last schema.NODE_USAGE_SAMPLES for the chart."""

    def __init__(self) -> None:
        self._last = _cpu_times()
        self.history: deque[dict[str, float]] = deque(maxlen=schema.NODE_USAGE_SAMPLES)

    def sample(self) -> dict[str, Any]:
        """The fields a heartbeat adds to the node document."""
        now_times = _cpu_times()
        cpu = None
        if now_times is not None and self._last is not None and now_times[1] > self._last[1]:
            cpu = round(100.0 * (now_times[0] - self._last[0]) / (now_times[1] - self._last[1]), 1)
        self._last = now_times
        memory = memory_percent()
        if cpu is not None and memory is not None:
            self.history.append({"t": time.time(), "cpu": cpu, "memory": memory})
        return {"cpu_percent": cpu, "memory_percent": memory, "usage": list(self.history)}
