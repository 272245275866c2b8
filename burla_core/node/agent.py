"""The node agent: the service that runs on every machine of a cluster (`burla node start`).

    caller (burla_core.node.client)                 node agent (this module, one aiohttp loop)
    ───────────────────────────────                 ──────────────────────────────────────────
    POST /v1/jobs  {function, slots, versions} ───► AgentJob (jobs.py): a share of the slots
    POST /v1/jobs/J/batches {batch_id, items} ────► queue ──(share batches at a time)──► WorkerPool
         ◄── 202 / 200 duplicate / 429 when full       ▲ bytes held here are bounded      │ workers
    GET  /v1/jobs/J/events?after=SEQ ◄══ frames ═══ event log seq 1,2,3 ◄── sink ◄──────────┘
         (hello, events, heartbeat every 1 s)
    POST /v1/jobs/J/ack?seq=SEQ ──────────────────► drop frames the caller has
    DELETE /v1/jobs/J ────────────────────────────► cancel, wait ≤ 1.5 s for calls to stop, forget

Every request must carry the node's bearer token (compared in constant time); anything else gets
401 and changes nothing. The worker pool is the same one the local backend uses, so a call runs
the same way on a laptop and on a node. A job whose caller stopped listening for `job_lease`
seconds is canceled, unless it was started with detach=True; with no job and no request for
`idle_shutdown` seconds the agent runs its shutdown command and exits.
"""

from __future__ import annotations

import asyncio
import hashlib
import ipaddress
import logging
import os
import re
import secrets
import signal
import socket
import ssl
import stat
import subprocess
import time
from dataclasses import dataclass, field

from aiohttp import web

from ..gpus import matching
from ..memory import private_buffer
from ..pool import WorkerPool, shared_pool
from .jobs import AgentJob, NodeCapacity, divide_node
from .protocol import (
    API_PREFIX,
    FRAMES_CONTENT_TYPE,
    HEARTBEAT,
    HEARTBEAT_SECONDS,
    HELLO,
    MAX_JOB_REQUEST_BYTES,
    MAX_REQUEST_BYTES,
    WRITE_SLICE_BYTES,
    ProtocolError,
    bearer_matches,
    burla_version,
    decode_batch,
    encode_frame,
    slices,
    package_versions,
    python_version,
    require,
    unpack_body,
    version_mismatch,
)

log = logging.getLogger("burla.node")

JOB_ID_PATTERN = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
HOLD_SECONDS = 5.0  # a batch upload waits this long for room before it is told 429
STOP_WAIT_SECONDS = 1.5  # a cancel answers once calls stopped, or after this
HOUSEKEEPING_SECONDS = 0.25


class AgentConfigError(Exception):
    """The agent cannot start as configured; the message says what to change."""


@dataclass
class AgentConfig:
    token: str
    host: str = "127.0.0.1"
    port: int = 8701
    tls_cert: str | None = None
    tls_key: str | None = None
    insecure: bool = False
    name: str = field(default_factory=socket.gethostname)
    capacity: NodeCapacity | None = None
    idle_shutdown: float | None = None
    shutdown_command: str = "shutdown -h now"
    job_lease: float = 30.0
    max_pending_bytes: int = 1024 * 1000 * 1000
    upload_hold_seconds: float = HOLD_SECONDS
    access_log: bool = False


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def measure_capacity(cpus: int | None = None, ram_gb: float | None = None, image: str | None = None) -> NodeCapacity:
    """What this machine offers; `cpus`/`ram_gb` advertise less (to keep part of it for others)."""
    from burla_backend_local.provisioner import cpu_count, this_machine_gpus, usable_ram_gb

    return NodeCapacity(
        cpus=cpus if cpus is not None else cpu_count(),
        ram_gb=ram_gb if ram_gb is not None else usable_ram_gb(),
        gpus=list(this_machine_gpus()),
        image=image,
    )


def error_response(status: int, code: str, message: str, headers: dict | None = None) -> web.Response:
    return web.json_response({"error": code, "message": message}, status=status, headers=headers)


class RequestRejected(Exception):
    def __init__(self, status: int, code: str, message: str, headers: dict | None = None) -> None:
        super().__init__(message)
        self.response = error_response(status, code, message, headers)


class NodeAgent:
    def __init__(self, config: AgentConfig, pool: WorkerPool | None = None) -> None:
        if not config.token:
            raise AgentConfigError("the node agent needs a token (--token-file or BURLA_NODE_TOKEN)")
        self.config = config
        self.token = config.token
        self.capacity = config.capacity or measure_capacity()
        self.pool = pool or shared_pool()
        self.instance_id = secrets.token_hex(8)
        self.jobs: dict[str, AgentJob] = {}
        self.started = time.monotonic()
        self.last_request = time.monotonic()
        self.stopping = asyncio.Event()
        self.room: asyncio.Event | None = None
        self.shutdown_ran = False
        self.loop: asyncio.AbstractEventLoop | None = None

    # --- the application -------------------------------------------------------------------

    def make_app(self) -> web.Application:
        app = web.Application(middlewares=[self._guard], client_max_size=MAX_REQUEST_BYTES)
        p = API_PREFIX
        app.router.add_get(f"{p}/health", self.health)
        app.router.add_post(f"{p}/jobs", self.create_job)
        app.router.add_get(f"{p}/jobs", self.list_jobs)
        app.router.add_get(f"{p}/jobs/{{job}}", self.job_status)
        app.router.add_delete(f"{p}/jobs/{{job}}", self.delete_job)
        app.router.add_post(f"{p}/jobs/{{job}}/batches", self.post_batch)
        app.router.add_get(f"{p}/jobs/{{job}}/events", self.stream_events)
        app.router.add_post(f"{p}/jobs/{{job}}/ack", self.ack)
        app.router.add_post(f"{p}/jobs/{{job}}/cancel", self.cancel_job)
        app.router.add_post(f"{p}/jobs/{{job}}/seal", self.seal_job)
        app.on_startup.append(self._on_startup)
        app.on_cleanup.append(self._on_cleanup)
        return app

    async def _on_startup(self, app: web.Application) -> None:
        self.loop = asyncio.get_running_loop()
        self.room = asyncio.Event()
        app["housekeeping"] = asyncio.create_task(self._housekeeping())

    async def _on_cleanup(self, app: web.Application) -> None:
        app["housekeeping"].cancel()
        for job in list(self.jobs.values()):
            job.release()
        self.jobs.clear()

    @web.middleware
    async def _guard(self, request: web.Request, handler):
        if not bearer_matches(request.headers.get("Authorization"), self.token):
            return error_response(
                401, "unauthorized", "this request has no valid bearer token; send 'Authorization: Bearer <node token>'"
            )
        self.last_request = time.monotonic()
        try:
            return await handler(request)
        except RequestRejected as rejected:
            return rejected.response
        except ProtocolError as error:
            return error_response(400, "bad_request", str(error))

    # --- helpers ---------------------------------------------------------------------------

    def _job(self, request: web.Request) -> AgentJob:
        job_id = request.match_info["job"]
        job = self.jobs.get(job_id)
        if job is None:
            raise RequestRejected(404, "unknown_job", f"this node has no job {job_id[:64]!r} (it may have ended, or the agent restarted)")
        job.last_contact = time.monotonic()
        return job

    async def _read_body(self, request: web.Request, limit: int, what: str) -> bytearray | memoryview:
        """The whole body, read into one buffer (big bodies arrive in many pieces; joining them
        again and again would cost more than the network)."""
        declared = request.content_length
        if declared is not None and declared > limit:
            raise RequestRejected(
                413, "too_large", f"the {what} declares {declared} bytes; this node accepts at most {limit}"
            )
        content = request.content
        try:
            if declared is not None:
                body = private_buffer(declared)  # huge pages: filling it costs ~3x less
                position = 0
                while position < declared:
                    chunk = await content.read(min(declared - position, WRITE_SLICE_BYTES))
                    if not chunk:
                        raise RequestRejected(
                            400, "truncated", f"the {what} ended after {position} of its {declared} declared bytes"
                        )
                    body[position : position + len(chunk)] = chunk
                    position += len(chunk)
                return body
            body = bytearray()
            while chunk := await content.read(WRITE_SLICE_BYTES):
                body += chunk
                if len(body) > limit:
                    raise RequestRejected(413, "too_large", f"the {what} is over {limit} bytes")
            return body
        except RequestRejected:
            raise
        except Exception as error:  # the peer went away mid-body, or sent broken chunked encoding
            raise RequestRejected(400, "truncated", f"the {what} could not be read ({type(error).__name__})") from None

    def pending_bytes(self) -> int:
        return sum(job.pending_bytes for job in self.jobs.values())

    def redivide(self) -> None:
        running = [job for job in self.jobs.values() if job.state == "running"]
        shares = divide_node(running, self.capacity)
        for job in running:
            job.was_idle = job.idle
            job.set_share(shares[job.job_id])

    def _wake_room(self, job: AgentJob | None = None) -> None:
        if self.room is not None:
            self.room.set()
        if job is not None and job.idle != job.was_idle:
            self.redivide()  # a job ran out of work: the others get its slots

    # --- handlers --------------------------------------------------------------------------

    async def health(self, request: web.Request) -> web.Response:
        capacity = self.capacity
        used_cpu = sum(job.share * job.func_cpu for job in self.jobs.values() if job.state == "running")
        return web.json_response(
            {
                "node": self.config.name,
                "instance": self.instance_id,
                "slots": capacity.max_slots(1, 4, None),
                "free_cpus": max(0, capacity.cpus - used_cpu),
                "cpus": capacity.cpus,
                "ram_gb": round(capacity.ram_gb, 2),
                "gpus": [
                    {"index": g.index, "name": g.name, "family": g.family, "memory_gb": g.memory_gb} for g in capacity.gpus
                ],
                "image": capacity.image,
                "python": python_version(),
                "burla": burla_version(),
                "packages": package_versions(),
                "jobs": len(self.jobs),
                "uptime_s": round(time.monotonic() - self.started, 1),
            }
        )

    async def create_job(self, request: web.Request) -> web.Response:
        message = unpack_body(await self._read_body(request, MAX_JOB_REQUEST_BYTES, "job request"), "job request")
        what = "job request"
        job_id = require(message, "job_id", str, what)
        if not JOB_ID_PATTERN.match(job_id):
            raise ProtocolError("job request: 'job_id' must be 1-64 letters, digits, '_', '.' or '-'")
        function_bytes = require(message, "function", bytes, what)
        if not function_bytes:
            raise ProtocolError("job request: 'function' is empty")
        function_name = require(message, "function_name", str, what, optional=True) or "function"
        slots = require(message, "slots", int, what)
        func_cpu = require(message, "func_cpu", int, what)
        func_ram = require(message, "func_ram", int, what)
        func_gpu = require(message, "func_gpu", str, what, optional=True)
        image = require(message, "image", str, what, optional=True)
        caller_python = require(message, "python", str, what)
        caller_burla = require(message, "burla", str, what)
        detach = bool(message.get("detach", False))
        cluster = message.get("cluster") or []
        if not (isinstance(cluster, list) and all(isinstance(url, str) and len(url) < 512 for url in cluster)):
            raise ProtocolError("job request: 'cluster' must be a list of node URLs")
        if slots < 1 or func_cpu < 1 or func_ram < 1:
            raise ProtocolError("job request: 'slots', 'func_cpu' and 'func_ram' must be >= 1")
        mismatch = version_mismatch(caller_python, caller_burla, python_version(), burla_version())
        if mismatch:
            raise RequestRejected(409, "version_mismatch", mismatch)
        if image is not None and image != self.capacity.image:
            raise RequestRejected(
                409, "wrong_image", f"this node runs image {self.capacity.image!r}, not {image!r}"
            )
        max_slots = self.capacity.max_slots(func_cpu, func_ram, func_gpu)
        if max_slots < 1:
            raise RequestRejected(
                409,
                "no_capacity",
                f"this node cannot run func_cpu={func_cpu}, func_ram={func_ram}, func_gpu={func_gpu}: it has "
                f"{self.capacity.cpus} CPUs, {self.capacity.ram_gb:.1f} GB RAM and "
                f"{len(self.capacity.gpus)} GPU(s)",
            )
        digest = hashlib.sha256(function_bytes).hexdigest()
        existing = self.jobs.get(job_id)
        if existing is not None:
            if existing.function_digest != digest:
                raise RequestRejected(409, "job_exists", f"job {job_id!r} already exists on this node with another function")
            existing.last_contact = time.monotonic()
            return web.json_response({"job_id": job_id, "slots": existing.share, "instance": self.instance_id}, status=200)
        gpu_indices = [gpu.index for gpu in matching(self.capacity.gpus, func_gpu)] if func_gpu else []
        job = AgentJob(
            asyncio.get_running_loop(),
            self.pool,
            job_id,
            function_bytes,
            function_name,
            max_slots=min(slots, max_slots),
            func_cpu=func_cpu,
            func_ram=func_ram,
            func_gpu=func_gpu,
            gpu_indices=gpu_indices,
            detach=detach,
            node_id=self.config.name,
            env=self.nested_call_env(cluster),
        )
        job.function_digest = digest
        job.on_progress = self._wake_room
        self.jobs[job_id] = job
        self.redivide()
        log.info("job %s (%s) started: up to %d slot(s), %d now", job_id, function_name, job.max_slots, job.share)
        return web.json_response({"job_id": job_id, "slots": job.share, "instance": self.instance_id}, status=201)

    def nested_call_env(self, cluster: list[str]) -> dict:
        """What a function needs to call remote_parallel_map itself: the same nodes, the token."""
        if not cluster:
            return {}
        return {"BURLA_BACKEND": "nodes", "BURLA_NODES": ",".join(cluster[:1000]), "BURLA_NODE_TOKEN": self.token}

    async def list_jobs(self, request: web.Request) -> web.Response:
        return web.json_response({"instance": self.instance_id, "jobs": [job.status() for job in self.jobs.values()]})

    async def job_status(self, request: web.Request) -> web.Response:
        return web.json_response(self._job(request).status())

    async def post_batch(self, request: web.Request) -> web.Response:
        job = self._job(request)
        declared = request.content_length
        if declared is not None and declared > MAX_REQUEST_BYTES:
            raise RequestRejected(
                413, "too_large", f"the batch declares {declared} bytes; this node accepts at most {MAX_REQUEST_BYTES}"
            )
        # Back-pressure before the body is read: the node holds at most max_pending_bytes of
        # inputs, except that a job with nothing queued may always bring one batch (progress).
        deadline = time.monotonic() + self.config.upload_hold_seconds
        while job.queue and self.pending_bytes() + (declared or 0) > self.config.max_pending_bytes:
            left = deadline - time.monotonic()
            if left <= 0 or job.state != "running":
                raise RequestRejected(
                    429,
                    "busy",
                    f"this node holds {self.pending_bytes()} bytes of queued inputs (limit "
                    f"{self.config.max_pending_bytes}); retry later",
                    headers={"Retry-After": "1"},
                )
            self.room.clear()
            try:
                await asyncio.wait_for(self.room.wait(), min(left, 0.5))
            except asyncio.TimeoutError:
                pass
        body = await self._read_body(request, MAX_REQUEST_BYTES, "batch")
        batch_id, items, size = decode_batch(body)
        if job.is_duplicate(batch_id):
            return web.json_response({"duplicate": True, "batch_id": batch_id}, status=200)
        if job.state != "running":
            raise RequestRejected(409, "job_canceled", f"job {job.job_id} was canceled; it takes no more inputs")
        repeated = job.already_pending(items)
        if repeated is not None:
            raise RequestRejected(409, "input_repeated", f"input {repeated} is already queued or running in this job")
        job.accept(batch_id, items, size)
        if job.was_idle:
            self.redivide()  # it has work now: divide the slots among the busy jobs again
        job.feed()
        return web.json_response({"batch_id": batch_id, "queued_inputs": job.queued_inputs}, status=202)

    async def stream_events(self, request: web.Request) -> web.StreamResponse:
        job = self._job(request)
        try:
            after = int(request.query.get("after", "0"))
        except ValueError:
            raise ProtocolError("'after' must be an integer") from None
        if after < 0 or after > job.last_seq:
            raise RequestRejected(
                409, "bad_after", f"after={after} is outside this job's events (0..{job.last_seq})"
            )
        job.ack(after)
        self._wake_room()
        generation = next(job.stream_generation)
        job.current_stream = generation
        response = web.StreamResponse(headers={"Content-Type": FRAMES_CONTENT_TYPE, "Cache-Control": "no-store"})
        await response.prepare(request)
        job.streams_open += 1
        cursor = after
        try:
            await self._write_pieces(
                response, encode_frame(0, HELLO, {"instance": self.instance_id, "job_id": job.job_id, "last_seq": job.last_seq})
            )
            while job.current_stream == generation and not self.stopping.is_set() and self.jobs.get(job.job_id) is job:
                job.changed.clear()
                pieces, reached = job.frames_after(cursor)
                if pieces:
                    await self._write_pieces(response, pieces)
                    cursor = reached
                    job.last_contact = time.monotonic()
                    continue
                try:
                    await asyncio.wait_for(job.changed.wait(), HEARTBEAT_SECONDS)
                except asyncio.TimeoutError:
                    await self._write_pieces(response, encode_frame(0, HEARTBEAT, None))
                    job.last_contact = time.monotonic()
        except (ConnectionError, asyncio.CancelledError, OSError):
            pass  # the caller went away; it reconnects with after= and gets the rest
        finally:
            job.streams_open -= 1
            job.last_contact = time.monotonic()
        return response

    @staticmethod
    async def _write_pieces(response: web.StreamResponse, pieces: list) -> None:
        for piece in slices(pieces):
            await response.write(piece)

    async def ack(self, request: web.Request) -> web.Response:
        job = self._job(request)
        try:
            seq = int(request.query.get("seq", ""))
        except ValueError:
            raise ProtocolError("'seq' must be an integer") from None
        if seq < 0:
            raise ProtocolError("'seq' must be >= 0")
        job.ack(seq)
        self._wake_room()
        return web.json_response({"acked": job.acked})

    async def cancel_job(self, request: web.Request) -> web.Response:
        job = self._job(request)
        job.cancel()
        stopped = await job.wait_stopped(STOP_WAIT_SECONDS)
        self.redivide()
        self._wake_room()
        # last_seq: the caller has all the output of the stopped calls once it has this event.
        return web.json_response({"job_id": job.job_id, "stopped": stopped, "last_seq": job.last_seq})

    async def seal_job(self, request: web.Request) -> web.Response:
        job = self._job(request)
        job.sealed = True
        return web.json_response(job.status())

    async def delete_job(self, request: web.Request) -> web.Response:
        job = self._job(request)
        job.cancel()
        stopped = await job.wait_stopped(STOP_WAIT_SECONDS)
        if self.jobs.get(job.job_id) is job:
            del self.jobs[job.job_id]
        job.release()
        job.changed.set()
        self.redivide()
        self._wake_room()
        log.info("job %s ended (%d done, %d failed)", job.job_id, job.done, job.failed)
        return web.json_response({"job_id": job.job_id, "stopped": stopped})

    # --- housekeeping ----------------------------------------------------------------------

    async def _housekeeping(self) -> None:
        while True:
            await asyncio.sleep(HOUSEKEEPING_SECONDS)
            now = time.monotonic()
            for job in list(self.jobs.values()):
                if job.detach or job.streams_open:
                    continue
                if now - job.last_contact > self.config.job_lease:
                    log.warning(
                        "job %s: its caller has not been heard from for %.0f s; canceling it", job.job_id, self.config.job_lease
                    )
                    job.cancel()
                    del self.jobs[job.job_id]
                    job.release()
                    self.redivide()
            idle_limit = self.config.idle_shutdown
            if idle_limit is not None and not self.jobs and now - self.last_request > idle_limit and not self.shutdown_ran:
                self.shutdown_ran = True
                log.warning("no job and no request for %.0f s: running the shutdown command", idle_limit)
                try:
                    subprocess.run(self.config.shutdown_command, shell=True, timeout=60)
                except (subprocess.SubprocessError, OSError) as error:
                    log.error("the shutdown command failed: %s", error)
                self.stopping.set()


def _close_inherited_sockets() -> None:
    """In a forked worker: close the agent's sockets, so that a connection the agent closes is
    really closed (a copy held by a worker would keep it open) and a restarted agent can bind
    its port at once."""
    try:
        signal.set_wakeup_fd(-1)  # the agent's event loop's, about to be closed here
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
    except (ValueError, OSError):
        pass
    try:
        fds = [int(name) for name in os.listdir("/proc/self/fd")]
    except OSError:
        return
    for fd in fds:
        try:
            if stat.S_ISSOCK(os.fstat(fd).st_mode):
                os.close(fd)
        except OSError:
            pass


def tls_context(cert: str | None, key: str | None) -> ssl.SSLContext | None:
    if not cert and not key:
        return None
    if not (cert and key):
        raise AgentConfigError("TLS needs both --tls-cert and --tls-key")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        context.load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as error:
        raise AgentConfigError(f"cannot load the TLS certificate {cert} / key {key}: {error}") from None
    return context


def check_config(config: AgentConfig) -> ssl.SSLContext | None:
    if not config.token or not config.token.strip():
        raise AgentConfigError(
            "the node agent refuses to start without a token: pass --token-file FILE or set BURLA_NODE_TOKEN "
            "(make one with `burla node token`)"
        )
    context = tls_context(config.tls_cert, config.tls_key)
    if context is None and not is_loopback(config.host) and not config.insecure:
        raise AgentConfigError(
            f"refusing to listen on {config.host} without TLS: the token and your data would cross the network "
            "in clear text. Pass --tls-cert and --tls-key, or --insecure if the network is private and you accept that."
        )
    return context


async def serve(config: AgentConfig, ready=None) -> None:
    """Run the agent until SIGTERM/SIGINT or an idle shutdown. `ready(url)` is called once it listens."""
    context = check_config(config)
    agent = NodeAgent(config)
    app = agent.make_app()
    runner = web.AppRunner(app, access_log=log if config.access_log else None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, config.host, config.port, ssl_context=context, backlog=256)
    await site.start()
    os.register_at_fork(after_in_child=_close_inherited_sockets)
    sockets = site._server.sockets if site._server is not None else []
    port = sockets[0].getsockname()[1] if sockets else config.port
    scheme = "https" if context else "http"
    host = f"[{config.host}]" if ":" in config.host else config.host
    url = f"{scheme}://{host}:{port}"
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, agent.stopping.set)
    capacity = agent.capacity
    log.info(
        "burla node agent %s listening on %s: %d CPUs, %.1f GB RAM, %d GPU(s), image %s",
        config.name, url, capacity.cpus, capacity.ram_gb, len(capacity.gpus), capacity.image,
    )
    if ready is not None:
        ready(url)
    try:
        await agent.stopping.wait()
    finally:
        await runner.cleanup()
