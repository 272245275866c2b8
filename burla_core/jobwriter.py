"""The detached runner's writer: buffers a running job's logs, results and counts and commits them
to the job store from a thread of its own, so the runner never waits on the disk.

Both buffers are bounded: past MAX_BUFFERED_BYTES of results or of log text, the runner waits for
the writer (back-pressure), so a job printing faster than the disk can take never grows the
runner's memory without bound.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Iterable

from .errors import BurlaError
from .jobstore import FLUSH_SECONDS, MAX_BUFFERED_BYTES, JobStore
from .types import ErrorInfo


class JobWriter:
    """Buffers a running job's logs, results and counts and commits them from a thread of its
    own every FLUSH_SECONDS, so the runner's event loop never waits on the disk (unless more than
    MAX_BUFFERED_BYTES of results are waiting)."""

    def __init__(self, path: Path, job_id: str, flush_seconds: float = FLUSH_SECONDS) -> None:
        self.path = path
        self.job_id = job_id
        self.flush_seconds = flush_seconds
        self._lock = threading.Lock()
        self._drained = threading.Condition(self._lock)
        self._wake = threading.Event()
        self._logs: list[tuple] = []
        self._results: list[tuple[int, bytes]] = []
        self._buffered_bytes = 0  # results waiting
        self._buffered_log_bytes = 0
        self._running = 0
        self._failed = 0
        self._final: tuple | None = None
        self._failure: BaseException | None = None
        self._thread = threading.Thread(target=self._loop, name=f"burla-job-writer-{job_id}", daemon=True)
        self._thread.start()

    def add_logs(self, entries: Iterable[tuple]) -> None:
        """entries: (input_index, stream, text); stamped with the time they arrive."""
        now = time.time()
        with self._lock:
            self._raise_failure()
            for input_index, stream, text in entries:
                self._logs.append((input_index, stream, text, now))
                self._buffered_log_bytes += len(text)
            self._wait_for_room()

    def add_result(self, input_index: int, payload: bytes) -> None:
        with self._lock:
            self._raise_failure()
            self._results.append((input_index, payload))
            self._buffered_bytes += len(payload)
            self._wait_for_room()

    def _wait_for_room(self) -> None:
        """With the lock held: wait while more than MAX_BUFFERED_BYTES of results or of logs wait."""
        while (
            self._buffered_bytes > MAX_BUFFERED_BYTES or self._buffered_log_bytes > MAX_BUFFERED_BYTES
        ) and self._thread.is_alive():
            self._wake.set()
            self._drained.wait(0.5)
            self._raise_failure()

    def set_progress(self, running: int, failed: int) -> None:
        self._running, self._failed = running, failed

    def finish(self, status: str, error_index: int | None = None, error: ErrorInfo | None = None, timeout: float = 120.0) -> None:
        """Write what is buffered and the job's end in one commit; raises if the writer failed."""
        with self._lock:
            self._final = (status, error_index, error)
        self._wake.set()
        self._thread.join(timeout)
        with self._lock:
            self._raise_failure()
        if self._thread.is_alive():
            raise TimeoutError(f"the job store did not take job {self.job_id}'s last results within {timeout:.0f}s")

    def _raise_failure(self) -> None:
        if self._failure is not None:
            raise BurlaError(f"could not write job {self.job_id} to {self.path}: {self._failure}") from self._failure

    def _loop(self) -> None:
        store = None
        try:
            store = JobStore(self.path)
            while True:
                self._wake.wait(self.flush_seconds)
                self._wake.clear()
                with self._lock:
                    logs, self._logs = self._logs, []
                    results, self._results = self._results, []
                    final = self._final
                store.write_batch(self.job_id, logs, results, self._running, self._failed, final)
                with self._lock:
                    self._buffered_bytes -= sum(len(payload) for _, payload in results)
                    self._buffered_log_bytes -= sum(len(entry[2]) for entry in logs)
                    self._drained.notify_all()
                if final is not None:
                    return
        except BaseException as error:  # reported to the runner by add_result / finish
            with self._lock:
                self._failure = error
                self._drained.notify_all()
        finally:
            if store is not None:
                store.close()
