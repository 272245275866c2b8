"""Detached jobs kept by the cluster, from any machine logged into it.

`submit_detached` is what `remote_parallel_map(..., detach=True)` does on backend "gcp": it
records the job with the service, uploads its function (with the caller's environment, for the
nodes' environment sync) and its inputs, in chunks, and has the service start its runner on a
node (see service/detached.py and runner.py); then it follows the job as a normal call would
(burla_core.detach.DetachedTail), and stopping the caller stops only the following.

`ClusterJobSource` is the cluster's job store as `burla jobs` and DetachedTail read one
(burla_core.jobstore.JobSource): records, logs, results, cancel, prune, over the service's API.
"""

from __future__ import annotations

import json
import os
import time
import urllib.error
import urllib.request
from typing import Any, Iterator

import msgpack

from burla_core.errors import BurlaError
from burla_core.jobstore import FINISHED, JobRecord, LogEntry, UnknownJob
from burla_core.types import ErrorInfo, JobSpec

from . import schema
from .cluster_client import ClusterClient, tls_context
from .fit import Call
from .settings import GcpSettings

INPUT_CHUNK_BYTES = 8 * 1000 * 1000  # well under Cloud Run's 32 MiB per request


def record_from_wire(data: dict) -> JobRecord:
    error = data.get("error")
    return JobRecord(
        job_id=data["job_id"], function_name=data.get("function_name") or "?", backend="gcp",
        status=data.get("status") or "queued", total=data.get("total"), done=int(data.get("done") or 0),
        failed=int(data.get("failed") or 0), running=int(data.get("running") or 0),
        created_at=float(data.get("created_at") or 0), started_at=data.get("started_at"), finished_at=data.get("ended_at"),
        creator_pid=None, runner_pid=None, cancel_requested=bool(data.get("cancel_requested")), cwd=data.get("cwd"),
        python_path=list(data.get("python_path") or []), error_index=data.get("error_index"),
        error=ErrorInfo.from_wire(schema.error_from_json(error)) if isinstance(error, dict) else None,
    )


class ClusterJobSource:
    """The cluster's detached jobs, read through its service (a burla_core.jobstore.JobSource)."""

    def __init__(self, settings: GcpSettings | None = None) -> None:
        self.settings = settings or GcpSettings.load()
        self.client = ClusterClient(self.settings)
        self.where = f"the cluster at {self.settings.cluster_url}"

    def _call(self, method: str, path: str, body: dict | None = None) -> dict:
        from .cluster_client import ClusterServiceError

        try:
            return self.client.call(method, path, body)
        except ClusterServiceError as error:
            if "HTTP 404" in str(error):
                raise UnknownJob(f"{error}. `burla jobs` lists the jobs of {self.where}.") from None
            raise

    def list_jobs(self, limit: int | None = None) -> list[JobRecord]:
        suffix = f"?limit={limit}" if limit else ""
        return [record_from_wire(job) for job in self._call("GET", f"/v1/detached{suffix}")["jobs"]]

    def resolve_id(self, job_id_or_prefix: str) -> str:
        text = job_id_or_prefix.strip()
        matches = [record.job_id for record in self.list_jobs() if record.job_id.startswith(text)]
        if text in matches:
            return text
        if len(matches) == 1:
            return matches[0]
        if matches:
            raise UnknownJob(f"job id {text!r} is ambiguous on {self.where}: it starts {', '.join(matches[:5])}")
        raise UnknownJob(f"no detached job with id {text!r} on {self.where}")

    def get(self, job_id: str) -> JobRecord:
        return record_from_wire(self._call("GET", f"/v1/detached/{job_id}"))

    def check_alive(self, record: JobRecord, owner_exited: bool | None = None) -> JobRecord:
        return record  # the service fails a job whose runner went silent, as it answers

    def logs_after(self, job_id: str, seq: int, limit: int = 1000) -> list[LogEntry]:
        entries = self._call("GET", f"/v1/detached/{job_id}/logs?after={seq}&limit={limit}")["entries"]
        return [LogEntry(seq=e[0], input_index=e[1], stream=e[2], text=e[3], time=e[4]) for e in entries]

    def results_after(self, job_id: str, seq: int) -> list[tuple[int, int, bytes]]:
        url = f"{self.settings.cluster_url}/v1/detached/{job_id}/results?after={seq}"
        request = urllib.request.Request(url, headers={"Authorization": f"Bearer {self.settings.token}"})
        context = tls_context() if url.startswith("https://") else None
        try:
            with urllib.request.urlopen(request, timeout=120, context=context) as answer:
                rows = msgpack.unpackb(answer.read())["results"]
        except urllib.error.HTTPError as error:
            raise BurlaError(f"reading job {job_id}'s results from {self.where} failed: HTTP {error.code}") from None
        return [(row[0], row[1], row[2]) for row in rows]

    def iter_results(self, job_id: str) -> Iterator[tuple[int, bytes]]:
        """(input_index, payload) in input order (read whole, then sorted)."""
        rows: list[tuple[int, bytes]] = []
        seq = 0
        while page := self.results_after(job_id, seq):
            rows += [(input_index, payload) for _, input_index, payload in page]
            seq = page[-1][0]
        rows.sort(key=lambda row: row[0])
        return iter(rows)

    def request_cancel(self, job_id: str) -> JobRecord:
        return record_from_wire(self._call("POST", f"/v1/detached/{job_id}/cancel", {}))

    def prune(self, finished_before: float | None = None) -> list[str]:
        removed = []
        for record in self.list_jobs():
            if record.status in FINISHED and (finished_before is None or (record.finished_at or 0) < finished_before):
                self._call("DELETE", f"/v1/detached/{record.job_id}")
                removed.append(record.job_id)
        return removed

    def close(self) -> None:
        pass


def _caller_path() -> list[str]:
    from burla_core.detach import caller_python_path

    return caller_python_path()


def submit_detached(settings: GcpSettings, job: JobSpec, indexed_inputs: Iterator[tuple[int, Any]]) -> int:
    """Record, upload and start a detached job on the cluster; the number of inputs."""
    from burla_core.envsync.job import describe_job_environment
    from burla_core.node.protocol import burla_version, encode_job_environment, python_version
    from burla_core.serialization import as_one_pickle, cloudpickle_dumps, dumps_input

    client = ClusterClient(settings)
    call = Call(job.resources, python_version(), burla_version())
    environment = encode_job_environment(describe_job_environment(job.function_bytes, job.options))
    client.call("POST", "/v1/detached", {
        "job_id": job.job_id, "call": call.to_wire(), "function_name": job.function_name,
        "max_parallelism": job.max_parallelism, "cwd": os.getcwd(), "python_path": _caller_path(),
    })
    try:
        upload(settings, job.job_id, schema.SPEC_OBJECT, cloudpickle_dumps({"job": job, "environment": environment}))
        chunk: list = []
        size = chunks = total = 0
        for input_index, value in indexed_inputs:
            payload = as_one_pickle(dumps_input(input_index, value))
            chunk.append([input_index, payload])
            size += len(payload)
            total += 1
            if size >= INPUT_CHUNK_BYTES:
                upload(settings, job.job_id, schema.input_chunk_name(chunks), msgpack.packb(chunk))
                chunks, chunk, size = chunks + 1, [], 0
        if chunk:
            upload(settings, job.job_id, schema.input_chunk_name(chunks), msgpack.packb(chunk))
            chunks += 1
        client.call("POST", f"/v1/detached/{job.job_id}/submit", {"input_chunks": chunks, "total": total})
    except BaseException:
        try:  # the job never started: leave nothing behind for `burla jobs` to show
            client.call("POST", f"/v1/detached/{job.job_id}/cancel", {}, retry_s=2.0)
            client.call("DELETE", f"/v1/detached/{job.job_id}", retry_s=2.0)
        except Exception:
            pass
        raise
    return total


def upload(settings: GcpSettings, job_id: str, name: str, data: bytes) -> None:
    url = f"{settings.cluster_url}/v1/detached/{job_id}/objects/{name}"
    request = urllib.request.Request(url, data=data, method="PUT", headers={
        "Authorization": f"Bearer {settings.token}", "Content-Type": "application/octet-stream"})
    context = tls_context() if url.startswith("https://") else None
    deadline = time.monotonic() + 60
    while True:
        try:
            with urllib.request.urlopen(request, timeout=120, context=context) as answer:
                answer.read()
                return
        except urllib.error.HTTPError as error:
            if error.code < 500 or time.monotonic() > deadline:
                body = error.read().decode(errors="replace")
                try:
                    message = json.loads(body).get("message", body)
                except ValueError:
                    message = body
                raise BurlaError(f"uploading job {job_id}'s {name} to the cluster failed (HTTP {error.code}): {message}") from None
        except OSError:
            if time.monotonic() > deadline:
                raise
        time.sleep(0.5)


def follow(settings: GcpSettings, job: JobSpec, total: int, *, generator: bool, spinner: bool):
    from burla_core.detach import DetachedTail

    tail = DetachedTail(ClusterJobSource(settings), job, None, total, spinner)
    return tail.completed() if generator else tail.in_input_order()

