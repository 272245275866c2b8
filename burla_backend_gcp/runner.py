"""A detached job's runner: the caller of a detach=True job, living on the cluster.

The node supervisor of the node the service chose starts it (`python -m burla_backend_gcp.runner
JOB_ID`, with the job's runner token) and keeps its node up while it runs.

    bucket: jobs/ID/spec (JobSpec + the caller's environment), jobs/ID/inputs-N
       │
       ▼   the same JobRun a normal call uses, on backend "gcp" as cluster job ID
    start_run ──results──► ClusterJobWriter ──► bucket chunks + jobs/ID/results/* documents
              ──logs─────►                  ──► jobs/ID/logs/* documents
              ──counts───►                  ──► jobs/ID (done: Increment, running, failed,
                                                runner_heartbeat_at), at most once a second
    jobs/ID.cancel_requested ──(read every second)──► the job is canceled as Ctrl-C would

It ends the job's document with done / failed (the error and its input) / canceled, and revokes
its own token.
"""

from __future__ import annotations

import logging
import os
import pickle
import sys
import threading
import time
import traceback
from typing import Iterator

import msgpack

from . import schema

log = logging.getLogger("burla.runner")

FLUSH_SECONDS = 0.5
JOB_WRITE_SECONDS = 1.0  # the job document: at most one write a second (Firestore's pace per document)
RESULT_CHUNK_BYTES = 8 * 1000 * 1000


class ClusterJobWriter:
    """Buffers the job's logs, results and counts, and writes them from a thread of its own."""

    def __init__(self, database, bucket, job_id: str) -> None:
        self.database = database
        self.bucket = bucket
        self.job_id = job_id
        self.job = database.collection(schema.JOBS).document(job_id)
        self._lock = threading.Condition()
        self._logs: list[list] = []
        self._results: list[list] = []
        self._result_bytes = 0
        self._log_seq = 0
        self._result_seq = 0
        self._done = 0
        self._running = 0
        self._failed = 0
        self._stop = False
        self.cancel_requested = False
        self._last_job_write = 0.0
        self._failure: BaseException | None = None
        self._thread = threading.Thread(target=self._loop, name="burla-runner-writer", daemon=True)
        self._thread.start()

    # --- what the JobRun's console and stream call -------------------------------------------

    def write_logs(self, entries: list) -> None:
        now = time.time()
        with self._lock:
            for input_index, stream, text in entries:
                self._log_seq += 1
                self._logs.append({"q": self._log_seq, "i": input_index, "s": stream, "t": text, "w": now})

    def notice(self, text: str) -> None:
        self.write_logs([(None, 2, f"burla: {text}\n")])

    def update(self, progress, force: bool = False) -> None:
        with self._lock:
            self._running, self._failed = progress.running, progress.failed

    def close(self) -> None:
        pass

    def add_result(self, input_index: int, payload: bytes) -> None:
        with self._lock:
            while self._result_bytes > 4 * RESULT_CHUNK_BYTES and self._failure is None:
                self._lock.wait(0.5)  # the bucket is slower than the nodes: wait for room
            self._results.append([input_index, payload])
            self._result_bytes += len(payload)
            if self._result_bytes >= RESULT_CHUNK_BYTES:
                self._lock.notify_all()
        self.raise_if_failed()

    def should_stop(self) -> bool:
        return self.cancel_requested

    # --- the writer thread -------------------------------------------------------------------

    def _loop(self) -> None:
        last_cancel_check = 0.0
        while True:
            with self._lock:
                if not self._stop:
                    self._lock.wait(FLUSH_SECONDS)
                stopping = self._stop
            try:
                self.flush(force_job=stopping)
                if time.monotonic() - last_cancel_check >= 1.0:
                    last_cancel_check = time.monotonic()
                    snapshot = self.job.get()
                    self.cancel_requested = bool(snapshot.exists and (snapshot.to_dict() or {}).get("cancel_requested"))
            except Exception as error:  # kept: the run raises it at the next result
                log.exception("writing job %s failed", self.job_id)
                self._failure = error
            if stopping:
                return

    def flush(self, force_job: bool = False) -> None:
        with self._lock:
            logs, self._logs = self._logs, []
            results, self._results = self._results, []
            self._result_bytes = 0
            self._lock.notify_all()
            running, failed = self._running, self._failed
        if logs:
            document = self.job.collection(schema.JOB_LOGS).document(schema.seq_document_id(logs[0]["q"]))
            document.set({"seq": logs[0]["q"], "last_seq": logs[-1]["q"], "entries": logs})
        if results:
            first = self._result_seq + 1
            self._result_seq += len(results)
            name = schema.job_object(self.job_id, schema.result_chunk_name(first))
            self.bucket.blob(name).upload_from_string(msgpack.packb(results))
            self.job.collection(schema.JOB_RESULTS).document(schema.seq_document_id(first)).set(
                {"seq": first, "last_seq": self._result_seq, "count": len(results), "object": name})
            self._done += len(results)
        now = time.monotonic()
        if force_job or now - self._last_job_write >= JOB_WRITE_SECONDS:
            self._last_job_write = now
            self.job.update({"done": self._done, "running": running, "failed": failed, "runner_heartbeat_at": time.time()})

    def raise_if_failed(self) -> None:
        if self._failure is not None:
            raise RuntimeError(f"writing job {self.job_id}'s logs and results to the cluster failed: "
                               f"{type(self._failure).__name__}: {self._failure}") from self._failure

    def finish(self, status: str, error_index: int | None, error) -> None:
        """Write what is left, then how the job ended (failed, if writing failed)."""
        with self._lock:
            self._stop = True
            self._lock.notify_all()
        self._thread.join(120)
        if self._failure is not None and status == schema.JOB_DONE:
            from burla_core.serialization import error_info

            try:
                self.raise_if_failed()
            except RuntimeError as failure:
                status, error_index, error = schema.JOB_FAILED, None, error_info(failure, 0)
        values = {"status": status, "ended_at": time.time(), "running": 0, "done": self._done,
                  "error": schema.error_to_document(error.to_wire()) if error is not None else None,
                  "error_index": error_index}
        try:
            self.job.update(values)
        except Exception as failure:  # the end must be recorded: without the error's details, then
            log.exception("recording how job %s ended failed", self.job_id)
            self.job.update({"status": schema.JOB_FAILED if status == schema.JOB_DONE else status, "ended_at": time.time(),
                             "running": 0, "error": {"type_name": "RunnerLost", "kind": "function",
                                                     "message": f"recording how the job ended failed: {failure}"}})


def input_chunks(bucket, job_id: str, chunks: int) -> Iterator[tuple[int, bytes]]:
    """The job's pickled inputs, a chunk at a time, as the job consumes them."""
    for number in range(chunks):
        data = bucket.blob(schema.job_object(job_id, schema.input_chunk_name(number))).download_as_bytes()
        for input_index, payload in msgpack.unpackb(data):
            yield input_index, payload


def run(job_id: str) -> int:
    from burla_core import plugins
    from burla_core.errors import JobCanceled
    from burla_core.run import start_run
    from burla_core.serialization import as_one_pickle, error_info

    from . import clients
    from .provisioner import CLUSTER_JOB_OPTION
    from .transport import SHIPPED_ENVIRONMENTS

    project = clients.default_project()
    database = clients.firestore(project, os.environ.get("BURLA_DATABASE") or schema.DATABASE)
    bucket = clients.storage(project).bucket(schema.bucket_name(project))
    reference = database.collection(schema.JOBS).document(job_id)
    record = (reference.get().to_dict() or {})
    if record.get("status") != schema.JOB_QUEUED:
        log.info("job %s is %s: nothing to run", job_id, record.get("status"))
        return 0
    if record.get("cancel_requested"):
        reference.update({"status": schema.JOB_CANCELED, "ended_at": time.time()})
        return 0
    reference.update({"status": schema.JOB_RUNNING, "started_at": time.time(), "runner_heartbeat_at": time.time()})
    writer = ClusterJobWriter(database, bucket, job_id)
    status, error_index, error = schema.JOB_FAILED, None, None
    try:
        shipped = pickle.loads(bucket.blob(schema.job_object(job_id, schema.SPEC_OBJECT)).download_as_bytes())
        job = shipped["job"]
        job.options[CLUSTER_JOB_OPTION] = job_id
        SHIPPED_ENVIRONMENTS[job.job_id] = shipped["environment"]
        errors: list = []
        job_run = start_run(
            job, plugins.resolve_backend("gcp"), input_chunks(bucket, job_id, int(record.get("input_chunks") or 0)),
            record.get("total"), spinner=False, prepickled=True, console=writer,
            error_sink=lambda input_index, info: errors.append((input_index, info)), should_stop=writer.should_stop,
        )
        stream = job_run._stream()
        try:
            for input_index, payload in stream:
                writer.add_result(input_index, as_one_pickle(payload))
        finally:
            stream.close()
        writer.flush()
        writer.raise_if_failed()
        if errors:
            status, (error_index, error) = schema.JOB_FAILED, errors[0]
        else:
            status = schema.JOB_DONE
    except (KeyboardInterrupt, JobCanceled):
        status = schema.JOB_CANCELED
    except BaseException as exc:  # recorded for the caller, who raises it
        status, error = schema.JOB_FAILED, error_info(exc, 0)
        traceback.print_exc()
    writer.finish(status, error_index, error)
    _revoke_tokens(database, job_id)
    return 0


def _revoke_tokens(database, job_id: str) -> None:
    from google.cloud.firestore_v1.base_query import FieldFilter

    query = database.collection(schema.USER_TOKENS).where(filter=FieldFilter("job_id", "==", job_id))
    for snapshot in query.stream():
        snapshot.reference.update({"revoked": True})


def main(argv: list[str] | None = None) -> int:
    from . import netguard

    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        sys.stderr.write("usage: python -m burla_backend_gcp.runner JOB_ID (started by a node supervisor)\n")
        return 2
    netguard.install_if_asked()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s burla-runner %(levelname)s %(message)s", stream=sys.stderr,
                        force=True)
    return run(args[0])


if __name__ == "__main__":
    sys.exit(main())
