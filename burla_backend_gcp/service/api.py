"""The cluster service's API for callers (the gcp provisioner) and administrators. JSON in and
out; every route needs a burla token or an administrator's Google credentials (auth.py).

    POST /v1/jobs                 a call's needs ─► the ready nodes that fit it, how to reach them
                                  (addresses, node token, cluster CA), the job recorded
    POST /v1/jobs/{id}/start      the job's name and size; grow=True boots the missing slots
    GET  /v1/jobs/{id}/nodes      long poll: the job's view of the cluster (nodes that fit it,
                                  nodes booting for it, failed boots) once it changes
    POST /v1/jobs/{id}/end        the caller is done
    GET  /v1/cluster              the project, the config, the service's version
    GET  /v1/nodes                every node document
    POST /v1/nodes                (admin) boot standing nodes of the config's machine type
    DELETE /v1/nodes/{id}         (admin) delete a node's VM
    POST /v1/tokens               (admin) issue a user token
"""

from __future__ import annotations

import asyncio
import hmac
import time
import uuid

from aiohttp import web

from burla_core import __version__

from .. import schema
from ..fit import Call, slots_for, why_none_fit
from .app import GROWER, JOBS, REGISTRY, SETTINGS, STORE
from .auth import caller_of, public, require_admin
from .firewall import admit_caller
from .responses import ApiFailure, bad_request, json_body, not_found, service_url
from .secrets import node_access

routes = web.RouteTableDef()

WATCH_MAX_S = 25.0  # a long poll answers within this, changed or not (Cloud Run's proxies like that)
JOB_ID_CHARS = set("abcdefghijklmnopqrstuvwxyz0123456789-_")


def node_wire(node: dict, slots: int | None = None) -> dict:
    """What a caller gets to know of a node."""
    wire = {key: node.get(key) for key in ("node_id", "address", "cpus", "ram_gb", "gpus", "image", "python", "burla",
                                         "machine_type", "zone", "status")}
    if slots is not None:
        wire["slots"] = slots
    return wire


def _call_of(body: dict) -> Call:
    try:
        return Call.from_wire(body.get("call"))
    except ValueError as error:
        raise bad_request(f"call: {error}") from None


async def _job_of(request: web.Request) -> dict:
    """The job the path names, if the caller may see it (its owner, its runner, an admin)."""
    job_id = request.match_info["job_id"]
    caller = caller_of(request)
    if caller.kind == schema.TOKEN_KIND_RUNNER and caller.job_id != job_id:
        raise not_found(f"no job {job_id} on this cluster")  # a runner's token serves its own job only
    job = await request.app[JOBS].get(job_id)
    if job is None or not (caller.admin or job.get("user") == caller.email or caller.job_id == job_id):
        raise not_found(f"no job {job_id} on this cluster")
    return job


@routes.get("/v1/cluster")
async def cluster(request: web.Request) -> web.Response:
    config = await asyncio.to_thread(request.app[STORE].config)
    return web.json_response({"project": request.app[SETTINGS].project, "version": __version__,
                              "config": config.to_document(), "caller": caller_of(request).email})


@routes.post("/v1/jobs")
async def start_job(request: web.Request) -> web.Response:
    body = await json_body(request)
    call = _call_of(body)
    caller = caller_of(request)
    app = request.app
    job_id = body.get("job_id") or uuid.uuid4().hex[:16]
    if not isinstance(job_id, str) or not job_id or set(job_id) - JOB_ID_CHARS or len(job_id) > 64:
        raise bad_request("job_id must be up to 64 lower-case letters, digits, '-' or '_'")
    if caller.kind == schema.TOKEN_KIND_RUNNER and job_id != caller.job_id:
        raise ApiFailure(403, "wrong_job", "a detached job's runner may only run its own job")
    registry = app[REGISTRY]
    await registry.recent()
    serving = registry.serving()
    fitting = [(node, slots_for(node, call)) for node in serving]
    fitting = [(node, slots) for node, slots in fitting if slots > 0]
    if not fitting and not call.resources.grow:
        code = "no_compatible_nodes" if serving else "no_nodes"
        raise ApiFailure(409, code, why_none_fit(call, serving), images=sorted({str(n.get("image")) for n in serving}))
    jobs = app[JOBS]
    # A detached job's runner joins its job's record; anyone else names a new job (a retried
    # request names the same one again).
    existing = await jobs.get(job_id) if caller.kind == schema.TOKEN_KIND_RUNNER else jobs.known(job_id)
    now = time.time()
    address = admit_caller(request, caller.email)
    record = {
        "job_id": job_id, "user": caller.email, "status": schema.JOB_RUNNING, "grow": call.resources.grow,
        "func_cpu": call.resources.func_cpu, "func_ram": call.resources.func_ram, "func_gpu": call.resources.func_gpu,
        "image": call.resources.image, "region": call.resources.region, "disk_gb": call.resources.disk_gb,
        "call": call.to_wire(), "last_seen_at": now, "caller_address": address,
    }
    if existing is None:
        record.update({"created_at": now, "started_at": now, "detach": False, "done": 0, "failed": 0, "running": 0})
    elif existing.get("user") != caller.email and not caller.admin and caller.job_id != job_id:
        raise ApiFailure(409, "job_exists", f"job {job_id} exists and is not yours")
    jobs.update(job_id, record)
    access = await asyncio.to_thread(node_access, app)
    return web.json_response({
        "job_id": job_id,
        "nodes": [node_wire(node, slots) for node, slots in fitting],
        "node_token": access.token, "ca_pem": access.ca_pem,
        "images": sorted({str(node.get("image")) for node in serving}),
    })


@routes.post("/v1/jobs/{job_id}/start")
async def job_started(request: web.Request) -> web.Response:
    job = await _job_of(request)
    body = await json_body(request)
    wanted = body.get("wanted_slots", 0)
    if type(wanted) is not int or wanted < 0:
        raise bad_request("wanted_slots must be an int >= 0")
    values = {key: body[key] for key in ("function_name", "max_parallelism", "total") if key in body}
    values["last_seen_at"] = time.time()
    app = request.app
    answer = {"booting": [], "failures": []}
    if job.get("grow") and wanted > 0:
        call = Call.from_wire(job["call"])
        answer = await asyncio.to_thread(app[GROWER].grow, job["job_id"], call, wanted,
                                         service_url=service_url(request))
        values["grow_failures"] = answer["failures"]
        values["grown_nodes"] = [item["node_id"] for item in answer["booting"]]
        await app[REGISTRY].refresh()  # its watchers see the new nodes booting from now on
    values["grow_requested"] = True
    app[JOBS].update(job["job_id"], values)
    return web.json_response(answer)


def job_view(job: dict, nodes: dict[str, dict], version: int) -> dict:
    """The cluster as one job sees it: the serving nodes that fit it, the nodes booting for it
    (with their progress), the nodes that ended (so a caller using one lets it go), failures."""
    call = Call.from_wire(job["call"])
    fitting, booting, ended, failures = [], [], [], list(job.get("grow_failures") or [])
    for node in nodes.values():
        status = node.get("status")
        mine = node.get("grown_for") == job["job_id"]
        slots = slots_for(node, call)
        if slots > 0:
            fitting.append(node_wire(node, slots))
        elif status == schema.BOOTING and mine:
            booting.append({"node_id": node["node_id"], "progress": node.get("boot_progress") or "booting",
                            "slots": node.get("planned_slots") or 0, "machine_type": node.get("machine_type")})
        elif status in (schema.FAILED, schema.DELETED):
            ended.append({"node_id": node["node_id"], "status": status, "reason": node.get("status_reason") or ""})
            if status == schema.FAILED and mine:
                failures.append(node.get("status_reason") or f"{node['node_id']} failed to boot")
    for node_id in job.get("grown_nodes") or []:
        if node_id not in nodes:  # made, but not yet read back from Firestore
            booting.append({"node_id": node_id, "progress": "creating its VM", "slots": 0, "machine_type": None})
    growing = bool(job.get("grow")) and (not job.get("grow_requested") or bool(booting))
    return {"version": version, "nodes": fitting, "booting": booting, "ended": ended, "failures": failures,
            "growing": growing}


@routes.get("/v1/jobs/{job_id}/nodes")
async def watch_job(request: web.Request) -> web.Response:
    job = await _job_of(request)
    try:
        version = int(request.query.get("version", "-1"))
        timeout = min(float(request.query.get("timeout", WATCH_MAX_S)), WATCH_MAX_S)
    except ValueError:
        raise bad_request("version must be an int and timeout a number of seconds") from None
    registry = request.app[REGISTRY]
    current = await registry.wait_for_change(version, timeout)
    job = request.app[JOBS].update(job["job_id"], {"last_seen_at": time.time()})
    return web.json_response(job_view(job, registry.nodes, current))


@routes.post("/v1/jobs/{job_id}/end")
async def end_job(request: web.Request) -> web.Response:
    job = await _job_of(request)
    body = await json_body(request)
    status = body.get("status", schema.JOB_DONE)
    if status not in schema.JOB_FINISHED:
        raise bad_request(f"status must be one of {sorted(schema.JOB_FINISHED)}")
    values = {"ended_at": time.time(), "status": status, "running": 0}
    for key in ("done", "failed"):
        if type(body.get(key)) is int:
            values[key] = body[key]
    if not job.get("detach"):
        request.app[JOBS].update(job["job_id"], values)
    return web.json_response({"ok": True})


def refuse_runners(request: web.Request) -> None:
    if caller_of(request).kind == schema.TOKEN_KIND_RUNNER:
        raise ApiFailure(403, "runner_token", "a detached job's runner token serves that job only")


@routes.get("/v1/nodes")
async def list_nodes(request: web.Request) -> web.Response:
    refuse_runners(request)
    registry = request.app[REGISTRY]
    await registry.refresh()
    return web.json_response({"nodes": list(registry.nodes.values())})


@routes.post("/v1/nodes")
async def boot_nodes(request: web.Request) -> web.Response:
    require_admin(request)
    body = await json_body(request)
    count = body.get("count", 1)
    if type(count) is not int or not 1 <= count <= 1000:
        raise bad_request("count must be an int from 1 to 1000")
    app = request.app
    config = await asyncio.to_thread(app[STORE].config, True)
    image = body.get("image") or config.container_image
    python = body.get("python")
    if image is None and not python:
        raise bad_request("give the nodes' image, or the python version whose python:X.Y image they run")
    answer = await asyncio.to_thread(app[GROWER].boot_standing, count, image or f"python:{python}",
                                     service_url(request))
    app[REGISTRY].nudge()
    return web.json_response(answer)


@routes.post("/v1/nodes/{node_id}/changed")
@public
async def node_changed(request: web.Request) -> web.Response:
    """A node's supervisor says it wrote its document (READY, or why it ended): the registry reads
    the documents now instead of at its next poll, so a caller waiting for that node hears of it
    at once. It takes the node token; the documents themselves are the truth it reads."""
    access = await asyncio.to_thread(node_access, request.app)
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), access.token.encode()):
        raise ApiFailure(401, "unauthenticated", "this endpoint takes the cluster's node token")
    request.app[REGISTRY].nudge()
    return web.json_response({"ok": True})


@routes.delete("/v1/nodes/{node_id}")
async def delete_node(request: web.Request) -> web.Response:
    caller = require_admin(request)
    node = await asyncio.to_thread(request.app[STORE].node, request.match_info["node_id"])
    if node is None:
        raise not_found(f"no node {request.match_info['node_id']}")
    await asyncio.to_thread(request.app[GROWER].delete_node, node, f"deleted by {caller.email}")
    request.app[REGISTRY].nudge()
    return web.json_response({"ok": True})


@routes.post("/v1/tokens")
async def issue_token(request: web.Request) -> web.Response:
    caller = require_admin(request)
    body = await json_body(request)
    email = body.get("email")
    lifetime = body.get("expires_in_s", schema.USER_TOKEN_SECONDS)
    if not isinstance(email, str) or "@" not in email:
        raise bad_request("email must be the user's e-mail address")
    if not isinstance(lifetime, (int, float)) or not 1 <= lifetime <= 366 * 24 * 3600:
        raise bad_request("expires_in_s must be a number of seconds, at most a year")
    token = schema.new_token()
    record = schema.UserToken(email=email, expires_at=time.time() + float(lifetime), label=str(body.get("label") or f"issued by {caller.email}"))
    await asyncio.to_thread(request.app[STORE].add_token, token, record)
    return web.json_response({"token": token, "email": email, "expires_at": record.expires_at})
