"""The caller's console: the function's output as it arrives, under a progress line that is drawn
only on a terminal and cleared before every line of output, so it never garbles it.

Output arrives in pieces as the workers read it: whole lines, a progress bar's "\r" updates, a
part of a very long line. A piece is printed at once; a line one input has left unfinished on a
stream is ended before another input's text goes to that stream, so two inputs never share a
line. The progress line is not drawn while a line of output is unfinished (it would erase it).
"""

from __future__ import annotations

import sys
import time

from .types import JobProgress

STDOUT, STDERR = 1, 2
FRAMES = "⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏"
REDRAW_SECONDS = 0.1


class Console:
    def __init__(self, show_spinner: bool, label: str) -> None:
        stream = sys.stderr
        self.enabled = bool(show_spinner) and _isatty(stream)
        self.stdout_is_terminal = _isatty(sys.stdout)
        self.label = label
        self.line_shown = False
        self.last_draw = 0.0
        self.frame = 0
        self.started = time.monotonic()
        self.unfinished: dict[int, int | None] = {}  # stream -> the input whose line is open on it

    def write_logs(self, entries: list) -> None:
        """entries: (input_index, stream 1|2, text), text any piece of the function's output."""
        if self.line_shown:
            self._clear()
        out, err = sys.stdout, sys.stderr
        unfinished = self.unfinished
        for input_index, stream, text in entries:
            if not text:
                continue
            target = out if stream == STDOUT else err
            if stream in unfinished:
                if unfinished[stream] != input_index:
                    _write(target, "\n")
                del unfinished[stream]
            _write(target, text)
            if not text.endswith("\n"):
                unfinished[stream] = input_index
        out.flush()
        err.flush()

    def notice(self, text: str) -> None:
        if self.line_shown:
            self._clear()
        self._end_lines()
        sys.stderr.write(f"burla: {text}\n")
        sys.stderr.flush()

    def update(self, progress: JobProgress, force: bool = False) -> None:
        if not self.enabled or STDERR in self.unfinished or (STDOUT in self.unfinished and self.stdout_is_terminal):
            return  # drawing would erase the unfinished line (a progress bar of the function's)
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
        self._end_lines()

    def _end_lines(self) -> None:
        """End the lines output left unfinished, so that what follows starts on a line of its own."""
        for stream in self.unfinished:
            target = sys.stdout if stream == STDOUT else sys.stderr
            _write(target, "\n")
            target.flush()
        self.unfinished.clear()

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


def _write(stream, text: str) -> None:
    """Write the function's text; characters this stream cannot encode (a terminal that is not
    UTF-8) are escaped instead of failing the call."""
    try:
        stream.write(text)
    except UnicodeEncodeError:
        encoding = getattr(stream, "encoding", None) or "ascii"
        stream.write(text.encode(encoding, "backslashreplace").decode(encoding))


def _isatty(stream) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False
