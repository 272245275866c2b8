"""The detached runner's JobWriter: what it buffers is bounded (logs as well as results), and a
job's count of done inputs is the results actually stored."""

from __future__ import annotations

import time

from burla_core import jobwriter
from burla_core.jobstore import DONE, JobStore
from burla_core.serialization import dumps_function
from burla_core.types import JobSpec, ResourceRequest


def new_job(store: JobStore, job_id: str) -> None:
    store.create_job(JobSpec(job_id, dumps_function(abs), "abs", ResourceRequest()), "local", 3, ".", [])


def test_done_counts_the_results_stored_not_the_ones_offered(tmp_path):
    store = JobStore(tmp_path / "jobs.sqlite3")
    new_job(store, "dup")
    writer = jobwriter.JobWriter(store.path, "dup")
    writer.add_result(0, b"first")
    time.sleep(0.3)  # committed
    writer.add_result(0, b"again")  # the same input twice (a retried input reported twice)
    writer.add_result(1, b"second")
    writer.finish(DONE)
    record = store.get("dup")
    assert record.done == 2, f"done is {record.done}, but only 2 distinct results were stored"


def test_log_lines_are_back_pressured_like_results(tmp_path, monkeypatch):
    limit = 64 * 1000
    monkeypatch.setattr(jobwriter, "MAX_BUFFERED_BYTES", limit)
    store = JobStore(tmp_path / "jobs.sqlite3")
    new_job(store, "chatty")
    slow_write = JobStore.write_batch

    def slow(self, *args, **kwargs):
        time.sleep(0.05)  # a slow disk
        return slow_write(self, *args, **kwargs)

    monkeypatch.setattr(JobStore, "write_batch", slow)
    writer = jobwriter.JobWriter(store.path, "chatty", flush_seconds=0.01)
    line = "x" * 1000 + "\n"
    most = 0
    for number in range(400):  # 400 KB of output, over 6 times the limit
        writer.add_logs([(number, 1, line)])
        most = max(most, writer._buffered_log_bytes)
    writer.finish(DONE)
    assert most <= limit + len(line), f"{most} bytes of log lines were buffered; the limit is {limit}"
    assert len(store.logs_after("chatty", 0, limit=1000)) == 400
