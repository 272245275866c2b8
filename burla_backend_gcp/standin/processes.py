"""The local processes the stand-in starts (simulated VMs, Cloud Run revisions, the Firestore
emulator) and the reaper that makes sure none outlives it.

Each process starts in a process group of its own, so stopping it stops everything its command
started (a startup script's node agent included), and Ctrl-C in a terminal reaches only the
stand-in. The reaper is one small child process that holds the read end of a pipe: the stand-in
writes `+PGID` / `-PGID` as it starts and stops groups; when the pipe closes — the stand-in
exited, crashed or was SIGKILLed — the reaper kills every group still listed, then exits. (A
command that calls `setsid` itself leaves its group and is not covered.)
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

_REAPER_CODE = r"""
import os, signal, sys
groups = set()
for line in sys.stdin:
    line = line.strip()
    if line[:1] == "+":
        groups.add(int(line[1:]))
    elif line[:1] == "-":
        groups.discard(int(line[1:]))
for pgid in groups:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except OSError:
        pass
"""


# Variables that would point a simulated machine at the real Google or at the caller's identity,
# or keep google.auth from asking the machine's metadata server.
SCRUBBED_VARIABLES = ("GOOGLE_APPLICATION_CREDENTIALS", "CLOUDSDK_CONFIG", "CLOUDSDK_CORE_PROJECT",
                      "GOOGLE_CLOUD_PROJECT", "NO_GCE_CHECK", "GCE_METADATA_HOST", "GCE_METADATA_IP",
                      "BURLA_METADATA_URL")


def local_environment(extra: dict[str, str]) -> dict[str, str]:
    """This process's environment without SCRUBBED_VARIABLES, plus `extra`: the base of every
    simulated VM's and Cloud Run revision's environment (PATH and the Python setup carry over)."""
    env = {k: v for k, v in os.environ.items() if k not in SCRUBBED_VARIABLES}
    env.update(extra)
    return env


def group_alive(pgid: int) -> bool:
    """Whether a process group still has a member that is not a zombie (Linux: from /proc; elsewhere
    a signal reaching the group is taken to mean yes)."""
    proc = Path("/proc")
    if not (proc / "self" / "stat").exists():
        return True
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rfind(")") + 2:].split()  # after "pid (comm) ": state ppid pgrp ...
        if len(fields) > 2 and fields[2] == str(pgid) and fields[0] != "Z":
            return True
    return False


class Reaper:
    """Kills every tracked process group when the process that created it goes away."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._process = subprocess.Popen(
            [sys.executable, "-S", "-c", _REAPER_CODE], stdin=subprocess.PIPE, text=True,
            start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )

    def _send(self, line: str) -> None:
        with self._lock:
            if self._process.stdin and not self._process.stdin.closed:
                self._process.stdin.write(line + "\n")
                self._process.stdin.flush()

    def track(self, pgid: int) -> None:
        self._send(f"+{pgid}")

    def forget(self, pgid: int) -> None:
        self._send(f"-{pgid}")

    def close(self) -> None:
        """Kill whatever is still tracked and stop the reaper."""
        with self._lock:
            if self._process.stdin and not self._process.stdin.closed:
                self._process.stdin.close()
        try:
            self._process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._process.kill()


class Processes:
    """Starts and stops the stand-in's process groups, all tracked by one reaper."""

    def __init__(self) -> None:
        self.reaper = Reaper()
        self._lock = threading.Lock()
        self._live: set[subprocess.Popen] = set()

    def spawn(self, argv: list[str], *, cwd: Path, env: dict[str, str], log_path: Path) -> subprocess.Popen:
        """Start `argv` in a new process group, stdout and stderr appended to `log_path`."""
        with open(log_path, "ab") as log:
            process = subprocess.Popen(argv, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=log,
                                       stderr=subprocess.STDOUT, start_new_session=True)
        self.reaper.track(process.pid)
        with self._lock:
            self._live.add(process)
        return process

    def stop(self, process: subprocess.Popen, *, grace_s: float = 2.0) -> int | None:
        """SIGTERM the process's group, SIGKILL what is left of it after `grace_s` (as a machine
        shutting down gives its services time to stop: the whole group gets the grace, not only
        its leader); returns the leader's exit status."""
        for sig, wait_s in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 10.0)):
            try:
                os.killpg(process.pid, sig)
                os.killpg(process.pid, signal.SIGCONT)  # a frozen group (a cut network) gets it too
            except (ProcessLookupError, PermissionError):
                pass
            deadline = time.monotonic() + wait_s
            try:
                process.wait(timeout=wait_s)
            except subprocess.TimeoutExpired:
                continue
            while group_alive(process.pid) and time.monotonic() < deadline:
                time.sleep(0.01)
            if not group_alive(process.pid):
                break
        # The leader may have exited before the rest of its group: make sure none is left, and
        # wait (boundedly: an orphan's zombie is its new parent's to reap) until they are gone.
        deadline = time.monotonic() + 5.0
        while time.monotonic() < deadline:
            try:
                os.killpg(process.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                break
            if not group_alive(process.pid):
                break
            time.sleep(0.01)
        self.reaper.forget(process.pid)
        with self._lock:
            self._live.discard(process)
        return process.returncode

    def signal_group(self, process: subprocess.Popen, sig: int) -> None:
        try:
            os.killpg(process.pid, sig)
        except (ProcessLookupError, PermissionError):
            pass

    def close(self) -> None:
        with self._lock:
            live = list(self._live)
        for process in live:
            self.stop(process, grace_s=1.0)
        self.reaper.close()
