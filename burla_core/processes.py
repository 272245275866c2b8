"""Whether a process is alive, as the job store and `burla jobs` need to know it."""

from __future__ import annotations

import os
from pathlib import Path


def process_alive(pid: int | None, cmdline_marker: str | None = None) -> bool:
    """Whether `pid` is a live process (not a zombie) and, where /proc can tell, one whose
    command line contains `cmdline_marker` (so a reused pid is not taken for the runner)."""
    if not pid:
        return False
    if os.name == "nt":  # os.kill(pid, 0) would send CTRL_C_EVENT there; assume alive
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    proc = Path("/proc") / str(pid)
    if not proc.is_dir():
        return True
    try:
        state = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]
        if state in ("Z", "X"):
            return False
        if cmdline_marker is not None:
            cmdline = (proc / "cmdline").read_bytes()
            # Empty while a process is mid-exec (it reads as empty for a moment after exec).
            return not cmdline or cmdline_marker.encode() in cmdline
    except (OSError, IndexError):
        return False
    return True
