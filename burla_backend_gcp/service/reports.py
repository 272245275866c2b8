"""A job's inputs as the dashboard shows them: what the caller reports (job_reporter.py), kept in
Firestore so that a page of 100 inputs is one document read, whatever the job's size.

    POST /v1/jobs/{id}/report   (the job's caller) ended inputs, counts, recent output lines ─►
        jobs/{id}/inputs/cNNNNNN   {"inputs": {"<index>": {status, node, started_at, ended_at, output}}}
        jobs/{id}/inputs/progress  {"samples": [{t, done, failed}], "logs": [{index, text}]}
        jobs/{id}                  done, failed, running, total, last_seen_at (through the JobBook)
      ◄─ {"cancel_requested": …}   (the dashboard's Stop button: POST /v1/jobs/{id}/cancel)

Writes happen once per report (about a second apart) in one batch; the progress samples are
thinned (every other one dropped) past MAX_SAMPLES, so a long job's chart stays one document.
"""

from __future__ import annotations

import asyncio
import math
import time
from typing import Any

from aiohttp import web

from .. import schema
from .api import _job_of
from .app import JOBS, REGISTRY, STORE
from .auth import caller_of
from .responses import ApiFailure, bad_request, json_body

routes = web.RouteTableDef()

MAX_INPUTS = 5000
MAX_LOG_LINES = 500
MAX_SAMPLES = 2000
RECENT_LOG_LINES = 200
CALLER_GONE_S = 120.0  # a running job whose caller has not reported for this long is over


def chunk_id(input_index: int) -> str:
    return f"c{input_index // schema.INPUTS_PER_CHUNK:06d}"


def _number(value: Any, name: str, minimum: float = 0.0) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < minimum:
        raise bad_request(f"{name} must be a number >= {minimum:g}")
    return float(value)


def _count(body: dict, name: str, optional: bool = False) -> int | None:
    value = body.get(name)
    if value is None and optional:
        return None
    if type(value) is not int or value < 0:
        raise bad_request(f"{name} must be an int >= 0")
    return value


def parse_report(body: dict) -> dict[str, Any]:
    """The report, every field checked (a 400 names the first wrong one)."""
    inputs = body.get("inputs") or []
    logs = body.get("logs") or []
    if not isinstance(inputs, list) or len(inputs) > MAX_INPUTS:
        raise bad_request(f"inputs must be a list of at most {MAX_INPUTS}")
    if not isinstance(logs, list) or len(logs) > MAX_LOG_LINES:
        raise bad_request(f"logs must be a list of at most {MAX_LOG_LINES}")
    records = []
    for item in inputs:
        if not isinstance(item, dict) or type(item.get("index")) is not int or item["index"] < 0:
            raise bad_request("each input needs its index (an int >= 0)")
        if item.get("status") not in (schema.INPUT_DONE, schema.INPUT_FAILED):
            raise bad_request(f"input {item['index']}: status must be {schema.INPUT_DONE!r} or {schema.INPUT_FAILED!r}")
        records.append({"index": item["index"], "status": item["status"], "node": str(item.get("node") or "")[:100],
                        "started_at": _number(item.get("started_at", 0), "started_at"),
                        "ended_at": _number(item.get("ended_at", 0), "ended_at"),
                        "output": str(item.get("output") or "")[:schema.INPUT_OUTPUT_CHARS]})
    lines = []
    for line in logs:
        if not isinstance(line, dict) or type(line.get("index")) is not int:
            raise bad_request("each log line needs its input's index")
        lines.append({"index": line["index"], "text": str(line.get("text") or "")[:500]})
    return {"inputs": records, "logs": lines, "done": _count(body, "done"), "failed": _count(body, "failed"),
            "running": _count(body, "running"), "total": _count(body, "total", optional=True)}


def report_counts(report: dict[str, Any]) -> dict[str, Any]:
    """The job document's fields a report updates."""
    counts = {key: report[key] for key in ("done", "failed", "running") if report[key] is not None}
    if report["total"] is not None:
        counts["total"] = report["total"]
    return {**counts, "last_seen_at": time.time()}


def write_report(client: Any, job_id: str, report: dict[str, Any]) -> None:
    """The report's inputs and progress samples (the job document's own fields go through the
    service's JobBook, with its other writes, in order)."""
    job = client.collection(schema.JOBS).document(job_id)
    chunks: dict[str, dict[str, Any]] = {}
    for record in report["inputs"]:
        index = record.pop("index")
        chunks.setdefault(chunk_id(index), {})[str(index)] = record
    progress_ref = job.collection(schema.JOB_INPUTS).document(schema.PROGRESS_DOCUMENT)
    snapshot = progress_ref.get()
    progress = snapshot.to_dict() if snapshot.exists else {}
    samples = list(progress.get("samples") or [])
    now = time.time()
    samples.append({"t": now, "done": report["done"], "failed": report["failed"]})
    if len(samples) > MAX_SAMPLES:
        samples = samples[::2] + ([samples[-1]] if len(samples) % 2 == 0 else [])
    logs = (list(progress.get("logs") or []) + report["logs"])[-RECENT_LOG_LINES:]
    batch = client.batch()
    for name, records in chunks.items():
        batch.set(job.collection(schema.JOB_INPUTS).document(name), {"inputs": records}, merge=True)
    batch.set(progress_ref, {"samples": samples, "logs": logs})
    batch.commit()


@routes.post("/v1/jobs/{job_id}/report")
async def report(request: web.Request) -> web.Response:
    job = await _job_of(request)
    parsed = parse_report(await json_body(request))
    store = request.app[STORE]
    await asyncio.to_thread(write_report, store.client, job["job_id"], parsed)
    job = request.app[JOBS].update(job["job_id"], report_counts(parsed))
    return web.json_response({"cancel_requested": bool(job.get("cancel_requested")),
                              "canceled_by": job.get("canceled_by")})


@routes.post("/v1/jobs/{job_id}/cancel")
async def cancel(request: web.Request) -> web.Response:
    job = await _job_of(request)
    caller = caller_of(request)
    if job.get("status") in schema.JOB_FINISHED:
        raise ApiFailure(409, "job_finished", f"job {job['job_id']} already ended ({job.get('status')})")
    values = {"cancel_requested": True, "canceled_by": caller.email, "cancel_requested_at": time.time()}
    if time.time() - float(job.get("last_seen_at") or 0) > CALLER_GONE_S and not job.get("detach"):
        values.update({"status": schema.JOB_CANCELED, "ended_at": time.time()})  # nobody is left to stop it
    request.app[JOBS].update(job["job_id"], values)
    request.app[REGISTRY].nudge()  # long polls about the job answer now
    return web.json_response({"ok": True, "status": values.get("status", job.get("status"))})


# --- what the dashboard reads ---------------------------------------------------------------------


def inputs_page(client: Any, job: dict, page: int, size: int) -> dict[str, Any]:
    """Inputs [page*size, (page+1)*size): the reported ones with their record, the others as
    waiting (or, once the job ended, as never reported)."""
    total = job.get("total")
    first = page * size
    last = first + size if total is None else min(first + size, int(total))
    reference = client.collection(schema.JOBS).document(job["job_id"]).collection(schema.JOB_INPUTS)
    records: dict[str, dict] = {}
    for name in sorted({chunk_id(i) for i in (first, max(first, last - 1))}):
        snapshot = reference.document(name).get()
        if snapshot.exists:
            records.update((snapshot.to_dict() or {}).get("inputs") or {})
    unreported = "not reported" if job.get("status") in schema.JOB_FINISHED else "waiting"
    rows = []
    for index in range(first, last):
        record = records.get(str(index))
        if record is None:
            rows.append({"index": index, "status": unreported})
        else:
            rows.append({"index": index, "status": record["status"], "node": record.get("node"),
                         "duration_s": max(0.0, record.get("ended_at", 0) - record.get("started_at", 0)),
                         "has_output": bool(record.get("output"))})
    pages = None if total is None else max(1, math.ceil(int(total) / size))
    return {"inputs": rows, "page": page, "size": size, "pages": pages, "total": total}


def input_detail(client: Any, job_id: str, input_index: int) -> dict[str, Any] | None:
    snapshot = (client.collection(schema.JOBS).document(job_id).collection(schema.JOB_INPUTS)
                .document(chunk_id(input_index)).get())
    record = ((snapshot.to_dict() or {}).get("inputs") or {}).get(str(input_index)) if snapshot.exists else None
    return None if record is None else {"index": input_index, **record}


def progress_of(client: Any, job_id: str) -> dict[str, Any]:
    snapshot = (client.collection(schema.JOBS).document(job_id).collection(schema.JOB_INPUTS)
                .document(schema.PROGRESS_DOCUMENT).get())
    data = snapshot.to_dict() if snapshot.exists else {}
    return {"samples": data.get("samples") or [], "logs": data.get("logs") or []}
