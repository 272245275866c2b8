"""Detached jobs on the cluster: the service's side. They outlive the caller's machine because
they run on the cluster: a runner process on one of its nodes drives the job against the other
nodes exactly as a caller would, and writes its status, counts, logs and results where any
machine logged into the cluster reads them.

    caller                                   service (this module)                   a node
    POST /v1/detached {call, name, ...}  ──► job document (queued), fit checked
    PUT  /v1/detached/ID/objects/NAME    ──► bucket: jobs/ID/spec, jobs/ID/inputs-N
    POST /v1/detached/ID/submit          ──► a serving node hosts its runner:
                                             a runner token (hashed), nodes/N.runners.ID ──► supervisor
                                                                                     starts runner.py
    GET  /v1/detached[/ID]               ◄── job documents (a silent runner: failed)     │ Firestore:
    GET  /v1/detached/ID/logs?after=     ◄── jobs/ID/logs/*                          ◄───┤ status, counts,
    GET  /v1/detached/ID/results?after=  ◄── jobs/ID/results/* + bucket chunks       ◄───┘ logs, results
    POST /v1/detached/ID/cancel          ──► cancel_requested (the runner stops the job)
    DELETE /v1/detached/ID               ──► a finished job's documents and objects go

With grow=True and no node serving, the service boots one node of the call's shape to host the
runner; the runner's own calls then grow the rest. Job data passes through the service only
here, for detached jobs: the caller has no Google credentials to write to the bucket itself.
"""

from __future__ import annotations

import asyncio
import re
import time

import msgpack
from aiohttp import web

from .. import schema
from ..fit import Call, slots_for, why_none_fit
from .app import GROWER, REGISTRY, SETTINGS, STORE
from .auth import caller_of
from .firewall import admit_caller
from .api import refuse_runners
from .responses import ApiFailure, bad_request, json_body, not_found, service_url

routes = web.RouteTableDef()

OBJECT_NAME = re.compile(r"^(spec|inputs-[0-9]{6})$")
RESULTS_PAGE_BYTES = 16 * 1000 * 1000
LOGS_PAGE = 1000
RUNNER_TOKEN_SECONDS = 30 * 24 * 3600.0


async def owned_job(request: web.Request) -> dict:
    refuse_runners(request)
    job_id = request.match_info["job_id"]
    job = await asyncio.to_thread(request.app[STORE].job, job_id)
    caller = caller_of(request)
    if job is None or not job.get("detach") or not (caller.admin or job.get("user") == caller.email):
        raise not_found(f"no detached job {job_id} on this cluster")
    return job


def record_wire(job: dict) -> dict:
    keys = ("job_id", "status", "user", "function_name", "total", "done", "failed", "running", "created_at",
            "started_at", "ended_at", "cancel_requested", "cwd", "python_path", "error", "error_index", "runner_node")
    answer = {key: job.get(key) for key in keys}
    answer["error"] = schema.error_to_json(job.get("error"))
    return answer


@routes.post("/v1/detached")
async def create(request: web.Request) -> web.Response:
    refuse_runners(request)
    body = await json_body(request)
    try:
        call = Call.from_wire(body.get("call"))
    except ValueError as error:
        raise bad_request(f"call: {error}") from None
    job_id = body.get("job_id")
    if not isinstance(job_id, str) or not re.fullmatch(r"[a-z0-9_-]{1,64}", job_id):
        raise bad_request("job_id must be up to 64 lower-case letters, digits, '-' or '_'")
    app = request.app
    await app[REGISTRY].recent()
    serving = app[REGISTRY].serving()
    if not call.resources.grow and not any(slots_for(node, call) for node in serving):
        code = "no_compatible_nodes" if serving else "no_nodes"
        raise ApiFailure(409, code, why_none_fit(call, serving))
    caller = caller_of(request)
    now = time.time()
    record = {
        "job_id": job_id, "status": schema.JOB_QUEUED, "user": caller.email, "detach": True, "grow": call.resources.grow,
        "function_name": str(body.get("function_name") or "function"), "call": call.to_wire(),
        "max_parallelism": body.get("max_parallelism"), "total": None, "done": 0, "failed": 0, "running": 0,
        "created_at": now, "started_at": None, "ended_at": None, "cancel_requested": False, "submitted": False,
        "cwd": body.get("cwd"), "python_path": body.get("python_path") or [], "caller_address": admit_caller(request, caller.email),
    }
    from google.api_core import exceptions

    try:
        await asyncio.to_thread(app[STORE].create_job, job_id, record)
    except exceptions.Conflict:
        raise ApiFailure(409, "job_exists", f"job {job_id} exists already") from None
    return web.json_response({"job_id": job_id}, status=201)


@routes.put("/v1/detached/{job_id}/objects/{name}")
async def put_object(request: web.Request) -> web.Response:
    job = await owned_job(request)
    name = request.match_info["name"]
    if not OBJECT_NAME.match(name):
        raise bad_request("objects are named spec or inputs-NNNNNN")
    if job.get("submitted"):
        raise ApiFailure(409, "job_submitted", f"job {job['job_id']} was submitted; its data cannot change")
    data = await request.read()
    bucket = request.app[SETTINGS].bucket
    await asyncio.to_thread(_bucket(request).blob(schema.job_object(job["job_id"], name)).upload_from_string, data)
    return web.json_response({"object": f"gs://{bucket}/{schema.job_object(job['job_id'], name)}", "bytes": len(data)})


def _bucket(request: web.Request):
    from .. import clients

    app = request.app
    if BUCKET not in app:
        settings = app[SETTINGS]
        app[BUCKET] = clients.storage(settings.project).bucket(settings.bucket)
    return app[BUCKET]


BUCKET = web.AppKey("bucket", object)


@routes.post("/v1/detached/{job_id}/submit")
async def submit(request: web.Request) -> web.Response:
    job = await owned_job(request)
    body = await json_body(request)
    chunks, total = body.get("input_chunks"), body.get("total")
    if type(chunks) is not int or chunks < 0 or type(total) is not int or total < 0:
        raise bad_request("input_chunks and total must be ints >= 0")
    values = {"submitted": True, "input_chunks": chunks, "total": total, "cluster_url": service_url(request)}
    store = request.app[STORE]
    await asyncio.to_thread(store.update_job, job["job_id"], values)
    job.update(values)
    node = await place_runner(request.app, job)
    return web.json_response({"job_id": job["job_id"], "runner_node": node})


async def place_runner(app: web.Application, job: dict) -> str | None:
    """Give the job's runner a serving node (the one with the fewest runners), or, with
    grow=True and none serving, boot one for it. Returns the node, or None while it waits."""
    registry = app[REGISTRY]
    await registry.recent()
    serving = [node for node in registry.serving() if node.get("status") in schema.SERVING_STATUSES]
    if not serving:
        if job.get("grow") and not job.get("runner_host_booted"):
            call = Call.from_wire(job["call"])
            answer = await asyncio.to_thread(app[GROWER].grow, job["job_id"], call, 1,
                                             service_url=job.get("cluster_url") or "")
            await asyncio.to_thread(app[STORE].update_job, job["job_id"], {
                "runner_host_booted": True, "grow_failures": answer["failures"],
                "grown_nodes": [item["node_id"] for item in answer["booting"]]})
            if not answer["booting"]:
                await asyncio.to_thread(fail_job, app[STORE], job["job_id"],
                                        "no node could be booted for its runner: " + "; ".join(answer["failures"]))
                return None
            # The booting node hosts the runner: its supervisor starts it once it serves, with no
            # request to this service needed (Cloud Run may give it no CPU between requests).
            node_id = answer["booting"][0]["node_id"]
            await asyncio.to_thread(assign_runner, app[STORE], job, node_id)
            registry.nudge()
            return node_id
        return None
    node = min(serving, key=lambda n: (len(n.get("runners") or {}), n.get("created_at") or 0))
    await asyncio.to_thread(assign_runner, app[STORE], job, node["node_id"])
    registry.nudge()
    return node["node_id"]


def assign_runner(store, job: dict, node_id: str) -> None:
    token = schema.new_token()
    store.add_token(token, schema.UserToken(email=job["user"], expires_at=time.time() + RUNNER_TOKEN_SECONDS,
                                            kind=schema.TOKEN_KIND_RUNNER, job_id=job["job_id"], label=f"runner on {node_id}"))
    store.update_job(job["job_id"], {"runner_node": node_id, "runner_assigned_at": time.time()})
    store.node_reference(node_id).update({f"runners.`{job['job_id']}`": {"token": token, "cluster_url": job["cluster_url"]}})


def fail_job(store, job_id: str, message: str, type_name: str = "NodesFailedToBoot") -> None:
    error = {"type_name": type_name, "message": message, "kind": "function", "traceback": "", "frames": [],
             "exception_only": f"{type_name}: {message}", "how": ""}
    store.update_job(job_id, {"status": schema.JOB_FAILED, "ended_at": time.time(), "running": 0, "error": error})
    store.revoke_job_tokens(job_id)


async def place_waiting_runners(app: web.Application) -> None:
    """Runners of submitted jobs that found no node (it was booting): place them now; and jobs
    whose runner went silent: failed."""
    from .store import FieldFilter

    store = app[STORE]

    def waiting() -> list[dict]:
        query = store.client.collection(schema.JOBS).where(filter=FieldFilter("detach", "==", True)).where(
            filter=FieldFilter("status", "in", [schema.JOB_QUEUED, schema.JOB_RUNNING]))
        jobs = [snapshot.to_dict() for snapshot in query.stream()]
        for job in jobs:
            check_runner(store, job, app[REGISTRY].nodes)
        return [job for job in jobs if job.get("status") == schema.JOB_QUEUED and job.get("submitted")
                and not job.get("runner_node") and not job.get("cancel_requested")]

    for job in await asyncio.to_thread(waiting):
        await place_runner(app, job)


def check_runner(store, job: dict, nodes: dict[str, dict]) -> dict:
    """The job, failed if its runner went silent or its node went away (read again)."""
    if job.get("status") != schema.JOB_RUNNING or not job.get("detach"):
        return job
    node = nodes.get(job.get("runner_node") or "")
    beat = job.get("runner_heartbeat_at") or job.get("started_at") or 0
    gone = node is not None and node.get("status") in (schema.FAILED, schema.DELETED)
    if not gone and node is not None and job.get("runner_heartbeat_at") is None:
        beat = max(beat, job.get("runner_assigned_at") or 0)
    if gone or time.time() - beat > schema.RUNNER_LOST_SECONDS:
        why = (f"its node {job.get('runner_node')} went away ({node.get('status_reason')})" if gone
               else f"it has not been heard from for {time.time() - beat:.0f} s")
        fail_job(store, job["job_id"], f"the runner of job {job['job_id']} stopped before the job ended: {why}",
                 type_name="RunnerLost")
        return store.job(job["job_id"]) or job
    return job


@routes.get("/v1/detached")
async def list_jobs(request: web.Request) -> web.Response:
    refuse_runners(request)
    caller = caller_of(request)
    store, nodes = request.app[STORE], request.app[REGISTRY].nodes
    try:
        limit = int(request.query["limit"]) if "limit" in request.query else None
    except ValueError:
        raise bad_request("limit must be an int") from None

    def read() -> list[dict]:
        jobs = [job for job in store.jobs(detach=True) if caller.admin or job.get("user") == caller.email]
        return [record_wire(check_runner(store, job, nodes)) for job in jobs[:limit] if job.get("submitted")]

    return web.json_response({"jobs": await asyncio.to_thread(read)})


@routes.get("/v1/detached/{job_id}")
async def get_job(request: web.Request) -> web.Response:
    job = await owned_job(request)
    job = await asyncio.to_thread(check_runner, request.app[STORE], job, request.app[REGISTRY].nodes)
    return web.json_response(record_wire(job))


@routes.get("/v1/detached/{job_id}/logs")
async def logs(request: web.Request) -> web.Response:
    job = await owned_job(request)
    try:
        after = int(request.query.get("after", "0"))
        limit = min(int(request.query.get("limit", LOGS_PAGE)), LOGS_PAGE)
    except ValueError:
        raise bad_request("after and limit must be ints") from None

    def read() -> list[list]:
        from .store import FieldFilter

        reference = request.app[STORE].job_reference(job["job_id"]).collection(schema.JOB_LOGS)
        # A document holds entries from its `seq` on: start at the one that may hold `after + 1`.
        query = reference.where(filter=FieldFilter("last_seq", ">", after)).order_by("last_seq").limit(50)
        entries: list[list] = []
        for snapshot in query.stream():
            entries += [[e["q"], e["i"], e["s"], e["t"], e["w"]] for e in snapshot.to_dict()["entries"] if e["q"] > after]
            if len(entries) >= limit:
                break
        return entries[:limit]

    return web.json_response({"entries": await asyncio.to_thread(read)})


@routes.get("/v1/detached/{job_id}/results")
async def results(request: web.Request) -> web.Response:
    job = await owned_job(request)
    try:
        after = int(request.query.get("after", "0"))
    except ValueError:
        raise bad_request("after must be an int") from None
    bucket = _bucket(request)

    def read() -> list:
        from .store import FieldFilter

        reference = request.app[STORE].job_reference(job["job_id"]).collection(schema.JOB_RESULTS)
        query = reference.where(filter=FieldFilter("last_seq", ">", after)).order_by("last_seq").limit(20)
        rows: list = []
        size = 0
        for snapshot in query.stream():
            chunk = snapshot.to_dict()
            seq = chunk["seq"]
            for input_index, payload in msgpack.unpackb(bucket.blob(chunk["object"]).download_as_bytes()):
                if seq > after:
                    rows.append([seq, input_index, payload])
                    size += len(payload)
                seq += 1
            if size >= RESULTS_PAGE_BYTES:
                break
        return rows

    rows = await asyncio.to_thread(read)
    return web.Response(body=msgpack.packb({"results": rows}), content_type="application/msgpack")


@routes.post("/v1/detached/{job_id}/cancel")
async def cancel(request: web.Request) -> web.Response:
    job = await owned_job(request)
    store = request.app[STORE]
    if job.get("status") not in schema.JOB_FINISHED:
        values = {"cancel_requested": True}
        if job.get("status") == schema.JOB_QUEUED and not job.get("runner_node"):
            values.update({"status": schema.JOB_CANCELED, "ended_at": time.time()})
        await asyncio.to_thread(store.update_job, job["job_id"], values)
        job.update(values)
    return web.json_response(record_wire(job))


@routes.delete("/v1/detached/{job_id}")
async def delete(request: web.Request) -> web.Response:
    job = await owned_job(request)
    if job.get("status") not in schema.JOB_FINISHED:
        raise ApiFailure(409, "job_running", f"job {job['job_id']} is {job.get('status')}; cancel it first")
    store, bucket = request.app[STORE], _bucket(request)

    def remove() -> None:
        reference = store.job_reference(job["job_id"])
        for collection in (schema.JOB_LOGS, schema.JOB_RESULTS):
            for snapshot in reference.collection(collection).stream():
                snapshot.reference.delete()
        for blob in bucket.client.list_blobs(bucket, prefix=schema.job_object(job["job_id"], "")):
            blob.delete()
        reference.delete()

    await asyncio.to_thread(remove)
    return web.json_response({"deleted": job["job_id"]})
