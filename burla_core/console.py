"""The caller's console: the function's output as it arrives, under a progress line that is drawn
only on a terminal and cleared before every line of output, so it never garbles it."""

from __future__ import annotations

import sys
import time

from .types import JobProgress

FRAMES = "⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏"
REDRAW_SECONDS = 0.1


class Console:
    def __init__(self, show_spinner: bool, label: str) -> None:
        stream = sys.stderr
        self.enabled = bool(show_spinner) and _isatty(stream)
        self.label = label
        self.line_shown = False
        self.last_draw = 0.0
        self.frame = 0
        self.started = time.monotonic()
        self.partials: dict[tuple[int, int], str] = {}  # pieces of a very long line, per input

    def write_logs(self, entries: list) -> None:
        """entries: (input_index, stream 1|2, text): whole lines, or a piece of a very long line
        (no final newline), held until the line is whole so lines never mix."""
        if self.line_shown:
            self._clear()
        out, err = sys.stdout, sys.stderr
        partials = self.partials
        for input_index, stream, text in entries:
            if partials:
                key = (input_index, stream)
                if key in partials:
                    text = partials.pop(key) + text
            if not text.endswith("\n"):
                partials[(input_index, stream)] = text
                continue
            (out if stream == 1 else err).write(text)
        out.flush()
        err.flush()

    def notice(self, text: str) -> None:
        if self.line_shown:
            self._clear()
        sys.stderr.write(f"burla: {text}\n")
        sys.stderr.flush()

    def update(self, progress: JobProgress, force: bool = False) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        if not force and now - self.last_draw < REDRAW_SECONDS:
            return
        self.last_draw = now
        self.frame = (self.frame + 1) % len(FRAMES)
        text = f"{FRAMES[self.frame]} {self.label}: {progress_text(progress)} ({now - self.started:.1f}s)"
        sys.stderr.write("\r\033[K" + text)
        sys.stderr.flush()
        self.line_shown = True

    def close(self) -> None:
        if self.line_shown:
            self._clear()
        for (_, stream), text in self.partials.items():
            (sys.stdout if stream == 1 else sys.stderr).write(text + "\n")
        self.partials.clear()

    def _clear(self) -> None:
        sys.stderr.write("\r\033[K")
        sys.stderr.flush()
        self.line_shown = False


MAX_STATUSES_SHOWN = 2


def progress_text(progress: JobProgress) -> str:
    """"3/100 done, 4 running, 0 failed", then what nodes are doing (booting, installing)."""
    total = "?" if progress.total is None else str(progress.total)
    text = f"{progress.done}/{total} done, {progress.running} running, {progress.failed} failed"
    if progress.waiting_for_nodes:
        text += ", waiting for a node"
    statuses = list(progress.node_status.items())
    if statuses:
        shown = "; ".join(f"{node}: {status}" for node, status in statuses[:MAX_STATUSES_SHOWN])
        more = len(statuses) - MAX_STATUSES_SHOWN
        text += f" | {shown}" + (f" (+{more} more)" if more > 0 else "")
    return text


def _isatty(stream) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False
