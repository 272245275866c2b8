"""Helpers shared by the conformance tests (imported only when the suite itself runs).

Functions here may run inside a backend's workers (they are referenced by the tests' functions),
so they use only the standard library and never `assert` (pytest rewrites asserts of test modules
into calls to its own helpers, which a worker without pytest could not import).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time

PACKAGE = __name__.rpartition(".")[0] or __name__


def send_suite_by_value(*module_names: str) -> None:
    """Make cloudpickle send this package's functions and classes by value, so that a backend
    whose workers do not have `conformance_tests` installed can still run them."""
    import cloudpickle

    for name in (PACKAGE, *module_names):
        module = sys.modules.get(name)
        if module is not None:
            cloudpickle.register_pickle_by_value(module)


# --- run inside workers --------------------------------------------------------------------------


def wait_for_path(path: str, timeout: float) -> bool:
    """True once `path` exists; False after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def write_text(path: str, text: str) -> None:
    """Write atomically so that a reader never sees a half-written file."""
    partial = f"{path}.{os.getpid()}.{threading.get_ident()}.tmp"
    with open(partial, "w", encoding="utf-8") as handle:
        handle.write(text)
    os.replace(partial, path)


def record_interval(directory: str, key: str, seconds: float) -> str:
    """Sleep `seconds`, recording when this call started and ended in `directory`."""
    started = time.time()
    time.sleep(seconds)
    ended = time.time()
    write_text(os.path.join(directory, f"{key}.interval"), json.dumps([started, ended, os.getpid()]))
    return key


# --- run in the test process -----------------------------------------------------------------------


def read_intervals(directory: str) -> list[tuple[float, float, int]]:
    intervals = []
    for name in sorted(os.listdir(directory)):
        if name.endswith(".interval"):
            with open(os.path.join(directory, name), encoding="utf-8") as handle:
                started, ended, pid = json.load(handle)
            intervals.append((started, ended, pid))
    return intervals


def max_overlap(intervals) -> int:
    """The most intervals that were open at the same instant (an end at t closes before a start
    at t opens)."""
    events = []
    for started, ended, *_ in intervals:
        events.append((started, 1))
        events.append((ended, -1))
    events.sort(key=lambda event: (event[0], event[1]))
    running = most = 0
    for _, step in events:
        running += step
        most = max(most, running)
    return most


def call_with_deadline(seconds: float, what: str, function, *args, **kwargs):
    """Run `function` in a thread; fail the test (instead of hanging the suite) when it has not
    returned after `seconds`. Its exception, if any, is re-raised here."""
    import pytest

    outcome: dict = {}

    def target() -> None:
        try:
            outcome["value"] = function(*args, **kwargs)
        except BaseException as error:  # re-raised in the test's thread
            outcome["error"] = error

    thread = threading.Thread(target=target, name="burla-conformance-deadline", daemon=True)
    thread.start()
    thread.join(seconds)
    if thread.is_alive():
        pytest.fail(f"{what} did not return within {seconds:.0f} s: it hangs", pytrace=False)
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


def raised_by(function, *args, **kwargs) -> BaseException:
    """The exception `function(*args, **kwargs)` raises; fails the test when it returns."""
    import pytest

    try:
        value = function(*args, **kwargs)
    except BaseException as error:  # the test inspects it
        return error
    pytest.fail(f"expected an exception, but the call returned {_short(value)}", pytrace=False)


def _short(value) -> str:
    text = repr(value)
    return text if len(text) <= 200 else text[:197] + "..."


def remote_traceback_texts(error: BaseException) -> list[str]:
    """Every place the remote traceback may be carried: `burla_traceback`, `traceback_text`
    (RemoteException) and the chained `__cause__`."""
    texts = []
    for attribute in ("burla_traceback", "traceback_text"):
        value = getattr(error, attribute, None)
        if isinstance(value, str) and value:
            texts.append(value)
    cause = error.__cause__
    if cause is not None:
        texts.append(str(cause))
        value = getattr(cause, "traceback_text", None)
        if isinstance(value, str) and value:
            texts.append(value)
    return texts


def process_state(pid: int) -> str:
    """'gone', 'zombie' or 'running' for a process of this machine."""
    try:
        with open(f"/proc/{pid}/stat", encoding="utf-8") as handle:
            fields = handle.read().rsplit(")", 1)[1].split()
        return "zombie" if fields[0] in ("Z", "X") else "running"
    except FileNotFoundError:
        return "gone"
    except (OSError, IndexError):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return "gone"
        except PermissionError:
            return "running"
        return "running"


class ScriptRun:
    """A Python script run in a child process (sys.executable), its stdout lines collected by a
    thread as they arrive. The child runs in its own session so that a Ctrl-C can be sent to its
    whole process group, as a terminal does."""

    def __init__(self, script_path: str, argument: str, extra_env: dict | None = None) -> None:
        env = dict(os.environ)
        env["PYTHONUNBUFFERED"] = "1"
        env["PYTHONIOENCODING"] = "utf-8"
        env.update(extra_env or {})
        self.process = subprocess.Popen(
            [sys.executable, script_path, argument],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
            start_new_session=True,
        )
        self.lines: list[str] = []  # whole stdout lines
        self._out = bytearray()
        self._err = bytearray()
        self._changed = threading.Condition()
        self._readers = [
            threading.Thread(target=self._read, args=(self.process.stdout, self._out), daemon=True),
            threading.Thread(target=self._read, args=(self.process.stderr, self._err), daemon=True),
        ]
        for reader in self._readers:
            reader.start()

    def _read(self, pipe, into: bytearray) -> None:
        """Collect what arrives as it arrives, partial lines too (a progress bar's updates)."""
        while chunk := pipe.read1(65536):
            with self._changed:
                into.extend(chunk)
                if into is self._out:
                    self.lines = [line.rstrip("\r") for line in self._out.decode("utf-8", "replace").split("\n")[:-1]]
                self._changed.notify_all()

    def wait_for_line(self, predicate, timeout: float) -> str | None:
        """The first stdout line for which `predicate` holds, or None after `timeout` seconds."""
        found: list[str] = []

        def check(out: str, err: str) -> bool:
            found[:] = [line for line in self.lines if predicate(line)][:1]
            return bool(found)

        return found[0] if self.wait_for_output(check, timeout) else None

    def wait_for_output(self, predicate, timeout: float) -> bool:
        """True once `predicate(stdout_text, stderr_text)` holds for what the child has written
        so far (unfinished lines included); False after `timeout` seconds or once it has ended."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                if predicate(self._out.decode("utf-8", "replace"), self._err.decode("utf-8", "replace")):
                    return True
                remaining = deadline - time.monotonic()
                ended = self.process.poll() is not None and not any(reader.is_alive() for reader in self._readers)
                if remaining <= 0 or ended:
                    return False
                self._changed.wait(min(remaining, 0.1))

    def wait(self, timeout: float) -> int | None:
        """The exit status, or None if the child is still running after `timeout` seconds."""
        try:
            code = self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None
        for reader in self._readers:
            reader.join(5)
        return code

    @property
    def stdout(self) -> str:
        with self._changed:
            return self._out.decode("utf-8", "replace")

    @property
    def stderr(self) -> str:
        with self._changed:
            return self._err.decode("utf-8", "replace")

    def kill(self) -> None:
        """Kill the child's whole process group (it is its own session), if still there."""
        if self.process.poll() is None:
            try:
                os.killpg(self.process.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass

    def report(self) -> str:
        return f"--- child stdout ---\n{self.stdout[-3000:]}\n--- child stderr ---\n{self.stderr[-3000:]}"
