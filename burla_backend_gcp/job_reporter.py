"""What the dashboard knows of a running job's inputs comes from its caller: the reporter tees
the job's events on their way to the scheduler and, about once a second, posts what ended since
the last report to the cluster service (POST /v1/jobs/{id}/report, service/reports.py).

    NodeSession ──events──► ReportingSink ──► the scheduler (unchanged, at once)
         ▲ submit                 │ per input: node, start, end, status, its output
    ReportingSession ─────────────┘
                                  └─ every FLUSH_S: ended inputs, counts, recent output lines
                                     ─► the service ─► {"cancel_requested": …} ─► stop_requested()

Reporting never slows or fails the job: posts happen on the reporter's own thread, a failed post
is kept for the next one (bounded), and a service that stays away only costs the dashboard its
view. What an input printed is kept up to schema.INPUT_OUTPUT_CHARS.

One reporter per job, found by the core's job id (`reporter_for`): the transport's first sessions
open before the provisioner knows the job (JobSpec comes with watch_job), so whichever asks first
makes it, and the provisioner `bind`s it to the cluster's job; nothing is sent before that.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from burla_core.interfaces import NodeSession
from burla_core.types import ERROR, LOGS, RESULTS, EventSink, InputBatch

from . import schema
from .service_http import post_json

log = logging.getLogger("burla.gcp")
_REPORTERS: dict[str, "JobReporter"] = {}  # core job id → its reporter
_REPORTERS_LOCK = threading.Lock()
FLUSH_S = 1.0
MAX_INPUTS_PER_REPORT = 2000
MAX_PENDING = 200_000  # ended inputs kept while the service cannot be reached
RECENT_LINES = 200


@dataclass
class _Input:
    node: str = ""
    started_at: float = 0.0
    output: list[str] = field(default_factory=list)
    size: int = 0

    def add(self, text: str) -> None:
        room = schema.INPUT_OUTPUT_CHARS - self.size
        if room > 0:
            self.output.append(text[:room])
            self.size += min(len(text), room)


class JobReporter:
    def __init__(self, cluster_url: str | None = None, token: str = "", job_id: str = "",
                 total: int | None = None) -> None:
        self.url = ""
        self.token = token
        self.job_id = job_id
        self.total = total
        self._lock = threading.Lock()
        self._inputs: dict[int, _Input] = {}
        self._ended: deque[dict[str, Any]] = deque()
        self._recent: deque[dict[str, Any]] = deque(maxlen=RECENT_LINES)
        self._done = self._failed = 0
        self._cancel: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        if cluster_url:
            self.bind(cluster_url, token, job_id, total)

    def bind(self, cluster_url: str, token: str, job_id: str, total: int | None = None) -> None:
        """Report to `cluster_url`'s job `job_id` from now on (what ended before is sent too)."""
        self.url = f"{cluster_url.rstrip('/')}/v1/jobs/{job_id}/report"
        self.token, self.job_id, self.total = token, job_id, total
        self._thread = threading.Thread(target=self._run, name=f"burla-report-{job_id}", daemon=True)
        self._thread.start()

    # --- what the job's sessions see ---------------------------------------------------------

    def sink(self, events: EventSink) -> EventSink:
        return ReportingSink(events, self)

    def session(self, session: NodeSession) -> NodeSession:
        return ReportingSession(session, self)

    def submitted(self, node_id: str, batch: InputBatch) -> None:
        now = time.time()
        with self._lock:
            for input_index, _ in batch.items:
                self._inputs[input_index] = _Input(node=node_id, started_at=now)

    def observe(self, event: list) -> None:
        kind = event[0]
        if kind not in (RESULTS, LOGS, ERROR):
            return
        now = time.time()
        with self._lock:
            if kind == LOGS:
                for input_index, _, text in event[2]:
                    self._inputs.setdefault(input_index, _Input(node=event[1])).add(text)
                    self._recent.append({"index": input_index, "text": text[:500]})
            elif kind == RESULTS:
                for input_index, _ in event[2]:
                    self._end(input_index, schema.INPUT_DONE, now, event[1])
            else:
                input_index, info = event[2]
                self._end(input_index, schema.INPUT_FAILED, now, event[1],
                          info.traceback.strip() or f"{info.type_name}: {info.message}")

    def _end(self, input_index: int, status: str, now: float, node: str, error: str = "") -> None:
        record = self._inputs.pop(input_index, None) or _Input(node=node, started_at=now)
        output = "".join(record.output)
        if error:
            output = (output + ("\n" if output and not output.endswith("\n") else "") + error)[:schema.INPUT_OUTPUT_CHARS]
        if status == schema.INPUT_DONE:
            self._done += 1
        else:
            self._failed += 1
        if len(self._ended) < MAX_PENDING:
            self._ended.append({"index": input_index, "status": status, "node": record.node or node,
                                "started_at": record.started_at or now, "ended_at": now, "output": output})

    # --- what the job asks -------------------------------------------------------------------

    def stop_requested(self) -> str | None:
        return self._cancel

    def outcome(self, raise_errors: bool = True) -> dict[str, Any]:
        """What the job's end says to the service: its status and counts, as far as the caller
        saw them (stopped, or fewer inputs ended than it had: canceled)."""
        with self._lock:
            done, failed = self._done, self._failed
        if self._cancel or (self.total is not None and done + failed < self.total and not failed):
            status = schema.JOB_CANCELED
        elif failed and raise_errors:
            status = schema.JOB_FAILED
        else:
            status = schema.JOB_DONE
        return {"status": status, "done": done, "failed": failed}

    # --- reporting ---------------------------------------------------------------------------

    def _report(self) -> dict[str, Any]:
        with self._lock:
            count = min(len(self._ended), MAX_INPUTS_PER_REPORT)
            inputs = [self._ended.popleft() for _ in range(count)]
            recent, self._recent = list(self._recent), deque(maxlen=RECENT_LINES)
            return {"inputs": inputs, "done": self._done, "failed": self._failed, "running": len(self._inputs),
                    "total": self.total, "logs": recent}

    def _send(self, report: dict[str, Any]) -> None:
        if not self.url:  # not bound to the cluster's job yet: keep it for the first report
            with self._lock:
                self._ended.extendleft(reversed(report["inputs"]))
            return
        try:
            answer = post_json(self.url, report, token=self.token, timeout_s=15)
        except Exception as error:  # the job must go on: keep what was not sent for the next report
            log.debug("could not report job %s to the cluster: %s", self.job_id, error)
            with self._lock:
                self._ended.extendleft(reversed(report["inputs"]))
            return
        if answer.get("cancel_requested"):
            self._cancel = f"stopped from the dashboard by {answer.get('canceled_by') or 'an admin'}"

    def _run(self) -> None:
        while not self._stop.wait(FLUSH_S):
            self._send(self._report())

    def flush(self, timeout_s: float = 5.0) -> None:
        """Send everything that ended so far (trying for up to `timeout_s`)."""
        deadline = time.monotonic() + timeout_s
        while self.url:
            self._send(self._report())
            with self._lock:
                if not self._ended or time.monotonic() >= deadline:
                    return

    def close(self, timeout_s: float = 3.0) -> None:
        """Send what is left (trying for at most `timeout_s`) and stop."""
        deadline = time.monotonic() + timeout_s
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=timeout_s)
        if self.url:
            self.flush(max(0.0, deadline - time.monotonic()))


class ReportingSink(EventSink):
    """An EventSink that shows every event to the reporter, then passes it on unchanged."""

    def __init__(self, inner: EventSink, reporter: JobReporter) -> None:
        self._inner = inner
        self._reporter = reporter
        self.get = inner.get
        self.get_nowait = inner.get_nowait

        def put(event: list) -> None:
            reporter.observe(event)
            inner.put(event)

        self.put = put


class ReportingSession(NodeSession):
    """A node session whose submissions the reporter times; everything else is the session's."""

    def __init__(self, session: NodeSession, reporter: JobReporter) -> None:
        self._session = session
        self._reporter = reporter
        self.node_id = session.node_id
        self.slots = session.slots

    def submit(self, batch: InputBatch) -> None:
        self._reporter.submitted(self.node_id, batch)
        self._session.submit(batch)

    def cancel(self) -> None:
        self._session.cancel()

    def close(self) -> None:
        self._session.close()

    def is_stopped(self) -> bool:
        return self._session.is_stopped()

    def wait_stopped(self, timeout: float) -> bool:
        return self._session.wait_stopped(timeout)


def reporter_for(core_job_id: str) -> JobReporter:
    """The job's reporter, made by whichever of the provisioner and the transport asks first."""
    with _REPORTERS_LOCK:
        reporter = _REPORTERS.get(core_job_id)
        if reporter is None:
            reporter = _REPORTERS[core_job_id] = JobReporter()
        return reporter


def unregister(core_job_id: str) -> None:
    with _REPORTERS_LOCK:
        _REPORTERS.pop(core_job_id, None)
