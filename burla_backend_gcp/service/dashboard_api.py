"""The JSON the dashboard's pages poll, and the admin actions behind its buttons. Every route
needs a caller (a session cookie, with its CSRF token to change anything, or a burla token);
a user sees their own jobs, an admin everyone's and may change the cluster.

    GET  /v1/dashboard/overview                   nodes, recent jobs, the cluster and its config
    GET  /v1/dashboard/jobs                       jobs (status, progress, duration, failures)
    GET  /v1/dashboard/jobs/{id}                  one job, its completed-over-time samples, its output
    GET  /v1/dashboard/jobs/{id}/inputs?page&size one page of its inputs (reports.py)
    GET  /v1/dashboard/jobs/{id}/inputs/{index}   one input, with what it printed
    PUT  /v1/config                               (admin) machine type, quantity, idle timeout, ...
    POST /v1/cluster/start                        (admin) boot the nodes `quantity` asks for
    POST /v1/cluster/shrink                       (admin) delete idle nodes
    GET, POST /v1/users; DELETE /v1/users/{email} (admin) who may use the cluster
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
import sys
import time
from typing import Any

from aiohttp import web

from burla_core import __version__

from .. import schema
from .api import _job_of
from .app import GROWER, REGISTRY, SETTINGS, STORE
from .auth import TOKEN_CACHE, caller_of, require_admin
from .reports import input_detail, inputs_page, progress_of
from .responses import ApiFailure, bad_request, json_body, not_found, service_url

routes = web.RouteTableDef()

ENDED_NODES_SHOWN_S = 3600.0  # deleted and failed nodes stay on the dashboard this long
PAGE_SIZES = (25, 50, 100, 200)
_MACHINE_TYPE = re.compile(r"^[a-z][a-z0-9]*(-[a-z0-9]+){1,3}$")
_EMAIL = re.compile(r"^[^@\s/]+@[^@\s/]+\.[^@\s/]+$")


def node_summary(node: dict, now: float) -> dict[str, Any]:
    idle_since = node.get("idle_since")
    idle_s = now - idle_since if idle_since and node.get("status") == schema.READY else None
    return {
        "node_id": node.get("node_id"), "status": node.get("status"), "machine_type": node.get("machine_type"),
        "image": node.get("image"), "gpus": [g.get("name") for g in node.get("gpus") or [] if isinstance(g, dict)],
        "cpus": node.get("cpus"), "ram_gb": node.get("ram_gb"), "zone": node.get("zone"), "spot": node.get("spot"),
        "idle_s": idle_s, "cpu_percent": node.get("cpu_percent"), "memory_percent": node.get("memory_percent"),
        "usage": node.get("usage") or [], "status_reason": node.get("status_reason"),
        "boot_progress": node.get("boot_progress"), "grown_for": node.get("grown_for"),
        "created_at": node.get("created_at"), "heartbeat_at": node.get("heartbeat_at"),
    }


def job_summary(job: dict, now: float) -> dict[str, Any]:
    started = job.get("started_at") or job.get("created_at")
    ended = job.get("ended_at")
    return {
        "job_id": job.get("job_id"), "status": job.get("status"), "user": job.get("user"),
        "function_name": job.get("function_name"), "total": job.get("total"), "done": job.get("done") or 0,
        "failed": job.get("failed") or 0, "running": job.get("running") or 0, "detach": bool(job.get("detach")),
        "grow": bool(job.get("grow")), "started_at": started, "ended_at": ended,
        "duration_s": (ended or now) - started if started else None,
        "cancel_requested": bool(job.get("cancel_requested")), "image": job.get("image"),
        "func_cpu": job.get("func_cpu"), "func_ram": job.get("func_ram"), "func_gpu": job.get("func_gpu"),
    }


def _visible_nodes(store, now: float) -> list[dict]:
    nodes = store.nodes()
    return [node_summary(n, now) for n in nodes
            if n.get("status") in schema.LIVE_STATUSES or now - float(n.get("ended_at") or now) < ENDED_NODES_SHOWN_S]


def _visible_jobs(store, caller, limit: int, now: float) -> list[dict]:
    jobs = store.jobs()
    if not caller.admin:
        jobs = [job for job in jobs if job.get("user") == caller.email]
    return [job_summary(job, now) for job in jobs[:limit]]


@routes.get("/v1/dashboard/overview")
async def overview(request: web.Request) -> web.Response:
    caller, store, now = caller_of(request), request.app[STORE], time.time()
    nodes = await asyncio.to_thread(_visible_nodes, store, now)
    jobs = await asyncio.to_thread(_visible_jobs, store, caller, 20, now)
    config = await asyncio.to_thread(store.config)
    return web.json_response({"project": request.app[SETTINGS].project, "version": __version__,
                              "email": caller.email, "admin": caller.admin, "config": config.to_document(),
                              "python": _service_python(), "nodes": nodes, "jobs": jobs, "now": now})


@routes.get("/v1/dashboard/jobs")
async def jobs(request: web.Request) -> web.Response:
    try:
        limit = max(1, min(int(request.query.get("limit", "100")), 1000))
    except ValueError:
        raise bad_request("limit must be an int") from None
    found = await asyncio.to_thread(_visible_jobs, request.app[STORE], caller_of(request), limit, time.time())
    return web.json_response({"jobs": found})


@routes.get("/v1/dashboard/jobs/{job_id}")
async def job(request: web.Request) -> web.Response:
    found = await _job_of(request)
    progress = await asyncio.to_thread(progress_of, request.app[STORE].client, found["job_id"])
    return web.json_response({"job": job_summary(found, time.time()), **progress})


@routes.get("/v1/dashboard/jobs/{job_id}/inputs")
async def job_inputs(request: web.Request) -> web.Response:
    found = await _job_of(request)
    try:
        page = max(0, int(request.query.get("page", "0")))
        size = int(request.query.get("size", "100"))
    except ValueError:
        raise bad_request("page and size must be ints") from None
    if size not in PAGE_SIZES:
        raise bad_request(f"size must be one of {', '.join(map(str, PAGE_SIZES))}")
    answer = await asyncio.to_thread(inputs_page, request.app[STORE].client, found, page, size)
    return web.json_response(answer)


@routes.get("/v1/dashboard/jobs/{job_id}/inputs/{index:\\d+}")
async def job_input(request: web.Request) -> web.Response:
    found = await _job_of(request)
    index = int(request.match_info["index"])
    record = await asyncio.to_thread(input_detail, request.app[STORE].client, found["job_id"], index)
    if record is None:
        raise not_found(f"input {index} of job {found['job_id']} has not been reported (yet)")
    return web.json_response(record)


# --- the admin's controls ------------------------------------------------------------------------

EDITABLE = {
    "machine_type": lambda v: isinstance(v, str) and bool(_MACHINE_TYPE.match(v)),
    "container_image": lambda v: v is None or (isinstance(v, str) and 0 < len(v) <= 300 and " " not in v),
    "quantity": lambda v: type(v) is int and 0 <= v <= 1000,
    "idle_timeout_s": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and 60 <= v <= 7 * 86400,
    "grow_idle_timeout_s": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and 30 <= v <= 86400,
    "cpu_quota": lambda v: type(v) is int and 1 <= v <= 100_000,
    "disk_gb": lambda v: type(v) is int and 10 <= v <= 65_536,
    "spot": lambda v: isinstance(v, bool),
}
WHAT = {"machine_type": "a machine type such as n2-standard-4", "container_image": "an image name, or null",
        "quantity": "an int from 0 to 1000", "idle_timeout_s": "seconds, from 60 to 604800",
        "grow_idle_timeout_s": "seconds, from 30 to 86400", "cpu_quota": "an int from 1 to 100000",
        "disk_gb": "an int from 10 to 65536", "spot": "true or false"}


def _ranges(value: Any) -> list[str]:
    if not isinstance(value, list) or len(value) > 100:
        raise bad_request("extra_source_ranges must be a list of address ranges")
    ranges = []
    for item in value:
        try:
            network = ipaddress.ip_network(str(item), strict=False)
        except ValueError:
            raise bad_request(f"extra_source_ranges: {item!r} is not an address range such as 203.0.113.0/24") from None
        if network.prefixlen == 0:
            raise bad_request("extra_source_ranges: the node port is never opened to the whole internet")
        ranges.append(str(network))
    return ranges


@routes.put("/v1/config")
async def update_config(request: web.Request) -> web.Response:
    require_admin(request)
    body = await json_body(request)
    unknown = sorted(set(body) - set(EDITABLE) - {"extra_source_ranges"})
    if unknown:
        raise bad_request(f"these settings cannot be changed here: {', '.join(unknown)}")
    for key, value in body.items():
        if key in EDITABLE and not EDITABLE[key](value):
            raise bad_request(f"{key} must be {WHAT[key]}")
    store = request.app[STORE]
    config = await asyncio.to_thread(store.config, True)
    values = config.to_document()
    values.update({k: v for k, v in body.items() if k in EDITABLE})
    if "extra_source_ranges" in body:
        values["extra_source_ranges"] = _ranges(body["extra_source_ranges"])
    updated = schema.ClusterConfig.from_document(values)
    await asyncio.to_thread(store.write_config, updated)
    return web.json_response({"config": updated.to_document()})


def _service_python() -> str:
    return f"{sys.version_info.major}.{sys.version_info.minor}"


@routes.post("/v1/cluster/start")
async def start_cluster(request: web.Request) -> web.Response:
    """Boot what the config's `quantity` asks for, less the nodes already up."""
    require_admin(request)
    app = request.app
    config = await asyncio.to_thread(app[STORE].config, True)
    await app[REGISTRY].refresh()
    standing = [n for n in app[REGISTRY].nodes.values() if n.get("status") in schema.LIVE_STATUSES
                and not n.get("grown_for")]
    missing = max(0, config.quantity - len(standing))
    if not missing:
        return web.json_response({"booting": [], "failures": [], "message": f"{len(standing)} nodes are up already"})
    image = config.container_image or f"python:{_service_python()}"
    answer = await asyncio.to_thread(app[GROWER].boot_standing, missing, image, service_url(request))
    app[REGISTRY].nudge()
    return web.json_response(answer)


@routes.post("/v1/cluster/shrink")
async def shrink_cluster(request: web.Request) -> web.Response:
    """Delete up to `count` idle nodes (READY, no job), the most recently made first."""
    caller = require_admin(request)
    body = await json_body(request)
    count = body.get("count", 1)
    if type(count) is not int or not 1 <= count <= 1000:
        raise bad_request("count must be an int from 1 to 1000")
    app = request.app
    await app[REGISTRY].refresh()
    idle = sorted((n for n in app[REGISTRY].nodes.values() if n.get("status") == schema.READY),
                  key=lambda n: n.get("created_at") or 0, reverse=True)[:count]
    for node in idle:
        await asyncio.to_thread(app[GROWER].delete_node, node, f"removed from the dashboard by {caller.email}")
    app[REGISTRY].nudge()
    return web.json_response({"deleted": [n["node_id"] for n in idle]})


def _users(store) -> list[dict]:
    return sorted((s.to_dict() for s in store.client.collection(schema.USERS).stream()), key=lambda u: u.get("email"))


@routes.get("/v1/users")
async def list_users(request: web.Request) -> web.Response:
    require_admin(request)
    return web.json_response({"users": await asyncio.to_thread(_users, request.app[STORE])})


@routes.post("/v1/users")
async def add_user(request: web.Request) -> web.Response:
    """Add (or change) a user; the answer holds a sign-in link for them (once, 7 days)."""
    from .login import LOGIN_STORE, origin_of

    caller = require_admin(request)
    body = await json_body(request)
    email, role = str(body.get("email") or "").strip().lower(), body.get("role", schema.ROLE_USER)
    if not _EMAIL.match(email):
        raise bad_request("email must be an e-mail address")
    if role not in (schema.ROLE_USER, schema.ROLE_ADMIN):
        raise bad_request(f"role must be {schema.ROLE_USER!r} or {schema.ROLE_ADMIN!r}")
    store = request.app[STORE]
    await asyncio.to_thread(store.set_user, email, role, caller.email)
    request.app[TOKEN_CACHE].forget_user(email)  # a new role counts at once
    code = await asyncio.to_thread(request.app[LOGIN_STORE].new_signin_code, email, role == schema.ROLE_ADMIN,
                                   schema.INVITE_SECONDS)
    return web.json_response({"email": email, "role": role, "invitation": f"{origin_of(request)}/signin?code={code}",
                              "expires_in_s": schema.INVITE_SECONDS})


def _remove_user(store, login_store, email: str) -> int:
    store.client.collection(schema.USERS).document(email).delete()
    revoked = 0
    for snapshot in store.client.collection(schema.USER_TOKENS).where("email", "==", email).stream():
        snapshot.reference.set({"revoked": True}, merge=True)
        revoked += 1
    login_store.end_sessions_of(email)
    return revoked


@routes.delete("/v1/users/{email}")
async def remove_user(request: web.Request) -> web.Response:
    """Remove a user: their tokens are revoked and their dashboard sessions end."""
    from .login import LOGIN_STORE

    caller = require_admin(request)
    email = request.match_info["email"].lower()
    if email == caller.email.lower():
        raise ApiFailure(409, "own_account", "you cannot remove yourself; ask another admin")
    revoked = await asyncio.to_thread(_remove_user, request.app[STORE], request.app[LOGIN_STORE], email)
    request.app[TOKEN_CACHE].forget_user(email)
    return web.json_response({"removed": email, "tokens_revoked": revoked})
