"""The node agent: the service that runs on every machine of a cluster (`burla node start`).

    caller (burla_core.node.session)                node agent (this module, one aiohttp loop)
    ────────────────────────────────                ──────────────────────────────────────────
    POST /v1/jobs  {function, slots, versions} ───► AgentJob (jobs.py)
    POST /v1/jobs/J/batches {batch_id, items} ────► its queue ──admitted (capacity.py)──► submitter
         ◄── 202 / 200 duplicate / 429 when full     ▲ bytes held here are bounded   thread ─► pool
    GET  /v1/jobs/J/events?after=SEQ ◄══ frames ═══ event log seq 1,2,3 ◄── sink ◄── pool reader
         (hello, events, heartbeat every 1 s)
    POST /v1/jobs/J/ack?seq=SEQ ──────────────────► drop frames the caller has; the caller's lease
    DELETE /v1/jobs/J ────────────────────────────► cancel, wait ≤ 1.5 s for calls to stop, forget

Every request must carry the node's bearer token (compared in constant time); anything else gets
401 and changes nothing. The worker pool is the same one the local backend uses, so a call runs
the same way on a laptop and on a node. The loop never blocks on the pool: batches, the function
sent to new workers and cancels go to the pool from one submitter thread (in order), waits run in
executor threads. A job whose caller sent nothing (not even its once-a-second acknowledgement)
for `job_lease` seconds is canceled; with no job and no request for `idle_shutdown` seconds the
agent runs its shutdown command and exits.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import hashlib
import logging
import secrets
import subprocess
import time

from aiohttp import web

from ..gpus import describe_func_gpu, matching
from ..machine import GIB
from ..pool import WorkerPool, shared_pool
from .bodies import RequestRejected, error_response, read_body
from .capacity import NodeSlots, measure_capacity
from .environments import EnvironmentBuildFailed, EnvironmentCache
from .job_setup import JobSetup
from .jobs import RUNNING, STOPPED, AgentJob
from .frames import decode_batch, encode_frame, slices
from .protocol import (
    API_PREFIX,
    FRAMES_CONTENT_TYPE,
    HEARTBEAT,
    HEARTBEAT_SECONDS,
    HELLO,
    MAX_JOB_REQUEST_BYTES,
    PARENT_JOB_ENV,
    MAX_REQUEST_BYTES,
    ProtocolError,
    bearer_matches,
    burla_version,
    decode_job_environment,
    decode_job_request,
    package_versions,
    python_version,
    unpack_body,
    version_mismatch,
)
from .settings import AgentConfig, AgentConfigError, default_env_cache_dir

log = logging.getLogger("burla.node")

STOP_WAIT_SECONDS = 1.5  # a cancel answers once calls stopped, or after this
HOUSEKEEPING_SECONDS = 0.25


class NodeAgent:
    def __init__(self, config: AgentConfig, pool: WorkerPool | None = None) -> None:
        if not config.token:
            raise AgentConfigError("the node agent needs a token (--token-file or BURLA_NODE_TOKEN)")
        self.config = config
        self.token = config.token
        self.capacity = config.capacity or measure_capacity()
        self.slots = NodeSlots(self.capacity)
        self.pool = pool or shared_pool()
        # One thread hands work to the pool, in order: the loop never waits on a pipe or a lock.
        self.submitter = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="burla-node-submit")
        self.instance_id = secrets.token_hex(8)
        self.jobs: dict[str, AgentJob] = {}
        self.turn = 0  # round-robin position among the jobs waiting for room
        self.started = time.monotonic()
        self.last_request = time.monotonic()
        self.stopping = asyncio.Event()
        self.room: asyncio.Event | None = None
        self.shutdown_ran = False
        cache_dir = config.env_cache_dir or default_env_cache_dir()
        try:
            cache = EnvironmentCache(cache_dir, config.env_cache_bytes, config.installer, config.install_timeout)
        except (OSError, EnvironmentBuildFailed) as error:
            raise AgentConfigError(f"cannot use the environment cache {cache_dir}: {error}") from None
        # Makes each job's environment (its packages, its local code) before its first call here.
        self.setup = JobSetup(cache, self.pool, config.sync_packages, config.name)

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
        app.on_startup.append(self._on_startup)
        app.on_cleanup.append(self._on_cleanup)
        return app

    async def _on_startup(self, app: web.Application) -> None:
        self.room = asyncio.Event()
        app["housekeeping"] = asyncio.create_task(self._housekeeping())

    async def _on_cleanup(self, app: web.Application) -> None:
        app["housekeeping"].cancel()
        for job in list(self.jobs.values()):
            await self.end_job(job, forget=True, wait=0.0)
        self.submitter.shutdown(wait=True)
        self.setup.shutdown()

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
        """The job a request names; the request is the caller's sign of life (its lease)."""
        job_id = request.match_info["job"]
        job = self.jobs.get(job_id)
        if job is None:
            raise RequestRejected(404, "unknown_job", f"this node has no job {job_id[:64]!r} (it may have ended, or the agent restarted)")
        job.last_contact = time.monotonic()
        return job

    def pending_bytes(self) -> int:
        return sum(job.pending_bytes for job in self.jobs.values())

    def _wake_room(self) -> None:
        if self.room is not None:
            self.room.set()

    def admit(self) -> None:
        """Give the pool the next batches, one call's room at a time, taking the jobs that wait
        in turn, for as long as one more call of the job whose turn it is fits on the node."""
        while True:
            waiting = [job for job in self.jobs.values() if job.wants_slot()]
            if not waiting:
                return
            start = self.turn % len(waiting)
            for offset in range(len(waiting)):
                job = waiting[(start + offset) % len(waiting)]
                # A nested job (started by a call that now waits for it) may always run one call:
                # its parent's calls hold the room it would need, and would otherwise wait forever.
                if self.slots.fits(job) or (job.parent_job is not None and job.batches_in_pool == 0):
                    break
            else:
                return  # nothing waiting fits until a call ends
            self.turn = start + offset + 1
            self.slots.take(job)
            batch = job.take_batch()
            self.submitter.submit(job.pool.submit, job.pool_job, batch.batch_id, batch.items)

    def _on_batches_settled(self, job: AgentJob, count: int) -> None:
        for _ in range(count):
            self.slots.give_back(job)
        self._wake_room()
        self.admit()

    async def end_job(self, job: AgentJob, forget: bool, wait: float = STOP_WAIT_SECONDS) -> bool:
        """Cancel a job (its queue dropped, its calls stopped); give its room back once the pool
        has stopped them; with `forget`, drop it and its events. True if its calls stopped."""
        in_pool = job.mark_canceled()
        if forget and self.jobs.get(job.job_id) is job:
            del self.jobs[job.job_id]
        if job.setup_task is not None:
            job.setup_task.cancel()  # its environment is no longer needed (an install goes on, cached)
        stopped = True
        if job.pool is not None and job.pool_job is not None:
            loop = asyncio.get_running_loop()
            await asyncio.wrap_future(self.submitter.submit(job.pool.close, job.pool_job))
            stopped = await loop.run_in_executor(None, job.pool.wait_closed, job.pool_job, wait)
        if stopped and job.state != RUNNING:
            job.state = STOPPED
        for _ in range(in_pool):
            self.slots.give_back(job)
        if forget:
            job.forget_events()
            on_release, job.on_release = job.on_release, None
            if on_release is not None:
                on_release()  # its environment's leases
        job.changed.set()
        self._wake_room()
        self.admit()
        return stopped

    # --- handlers --------------------------------------------------------------------------

    async def health(self, request: web.Request) -> web.Response:
        capacity = self.capacity
        return web.json_response(
            {
                "node": self.config.name,
                "instance": self.instance_id,
                "slots": capacity.max_slots(1, 4, None),
                "free_cpus": self.slots.free_cpus,
                "running_calls": self.slots.calls,
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
                "environments": self.setup.summary(),
                "uptime_s": round(time.monotonic() - self.started, 1),
            }
        )

    async def create_job(self, request: web.Request) -> web.Response:
        message = unpack_body(await read_body(request, MAX_JOB_REQUEST_BYTES, "job request"), "job request")
        job_request = decode_job_request(message)
        mismatch = version_mismatch(job_request.python, job_request.burla, python_version(), burla_version())
        if mismatch:
            raise RequestRejected(409, "version_mismatch", mismatch)
        if job_request.image is not None and job_request.image != self.capacity.image:
            raise RequestRejected(409, "wrong_image", f"this node runs image {self.capacity.image!r}, not {job_request.image!r}")
        max_slots = self.capacity.max_slots(job_request.func_cpu, job_request.func_ram, job_request.func_gpu)
        if max_slots < 1:
            raise RequestRejected(
                409,
                "no_capacity",
                f"this node cannot run func_cpu={job_request.func_cpu}, func_ram={job_request.func_ram}"
                f"{', ' + describe_func_gpu(job_request.func_gpu) if job_request.func_gpu else ''}: it has "
                f"{self.capacity.describe()}",
            )
        digest = hashlib.sha256(job_request.function).hexdigest()
        existing = self.jobs.get(job_request.job_id)
        if existing is not None:
            if existing.function_digest != digest:
                raise RequestRejected(409, "job_exists", f"job {job_request.job_id!r} already exists on this node with another function")
            existing.last_contact = time.monotonic()
            return web.json_response({"job_id": existing.job_id, "slots": existing.max_slots, "instance": self.instance_id}, status=200)
        environment = decode_job_environment(message)
        gpu_indices = [gpu.index for gpu in matching(self.capacity.gpus, job_request.func_gpu)] if job_request.func_gpu else []
        job = AgentJob(asyncio.get_running_loop(), job_request, digest, min(job_request.slots, max_slots), gpu_indices)
        job.on_batches_settled = self._on_batches_settled
        self.jobs[job.job_id] = job
        self.setup.start(job, environment, on_ready=lambda pool, worker_env: self._start_calls(job, pool, worker_env))
        log.info("job %s (%s) created: up to %d slot(s)", job.job_id, job.function_name, job.max_slots)
        return web.json_response({"job_id": job.job_id, "slots": job.max_slots, "instance": self.instance_id}, status=201)

    def _start_calls(self, job: AgentJob, pool: WorkerPool, worker_env: dict) -> None:
        """The job's environment is ready (on the loop): open its pool job off the loop, then
        admit its batches."""

        def open_pool_job():
            return pool.open_job(
                job.function,
                1,
                job.on_pool_event,
                node_id=self.config.name,
                env={**job.nested_env, PARENT_JOB_ENV: job.job_id, **worker_env},
                ram_limit_bytes=job.func_ram * GIB,
                gpu_indices=job.gpu_indices or None,
            )

        def opened(future: concurrent.futures.Future) -> None:
            if future.exception() is not None:
                job.fail_setup(future.exception())
                return
            job.loop.call_soon_threadsafe(self._calls_ready, job, pool, future.result())

        self.submitter.submit(open_pool_job).add_done_callback(opened)

    def _calls_ready(self, job: AgentJob, pool: WorkerPool, pool_job) -> None:
        job.started(pool, pool_job)
        if job.state != RUNNING or self.jobs.get(job.job_id) is not job:
            self.submitter.submit(pool.close, pool_job)  # ended while its pool job was opened
            return
        log.info("job %s (%s) runs", job.job_id, job.function_name)
        self.admit()

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
            if left <= 0 or job.state != RUNNING:
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
        body = await read_body(request, MAX_REQUEST_BYTES, "batch")
        batch_id, items, size = decode_batch(body)
        if job.is_duplicate(batch_id):
            return web.json_response({"duplicate": True, "batch_id": batch_id}, status=200)
        if job.state != RUNNING:
            raise RequestRejected(409, "job_canceled", f"job {job.job_id} was canceled; it takes no more inputs")
        repeated = job.already_pending(items)
        if repeated is not None:
            raise RequestRejected(409, "input_repeated", f"input {repeated} is already queued or running in this job")
        job.accept(batch_id, items, size)
        self.admit()
        return web.json_response({"batch_id": batch_id, "queued_inputs": job.queued_inputs}, status=202)

    async def stream_events(self, request: web.Request) -> web.StreamResponse:
        job = self._job(request)
        try:
            after = int(request.query.get("after", "0"))
        except ValueError:
            raise ProtocolError("'after' must be an integer") from None
        if after < 0 or after > job.last_seq:
            raise RequestRejected(409, "bad_after", f"after={after} is outside this job's events (0..{job.last_seq})")
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
                    continue
                try:
                    await asyncio.wait_for(job.changed.wait(), HEARTBEAT_SECONDS)
                except asyncio.TimeoutError:
                    await self._write_pieces(response, encode_frame(0, HEARTBEAT, None))
        except (ConnectionError, asyncio.CancelledError, OSError):
            pass  # the caller went away; it reconnects with after= and gets the rest
        finally:
            job.streams_open -= 1
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
        stopped = await self.end_job(job, forget=False)
        # last_seq: the caller has all the output of the stopped calls once it has this event.
        return web.json_response({"job_id": job.job_id, "stopped": stopped, "last_seq": job.last_seq})

    async def delete_job(self, request: web.Request) -> web.Response:
        job = self._job(request)
        stopped = await self.end_job(job, forget=True)
        log.info("job %s ended (%d done, %d failed)", job.job_id, job.done, job.failed)
        return web.json_response({"job_id": job.job_id, "stopped": stopped})

    # --- housekeeping ----------------------------------------------------------------------

    async def _housekeeping(self) -> None:
        while True:
            await asyncio.sleep(HOUSEKEEPING_SECONDS)
            now = time.monotonic()
            for job in list(self.jobs.values()):
                if now - job.last_contact > self.config.job_lease:
                    log.warning(
                        "job %s: its caller has not been heard from for %.0f s; canceling it", job.job_id, self.config.job_lease
                    )
                    await self.end_job(job, forget=True)
            idle_limit = self.config.idle_shutdown
            if idle_limit is not None and not self.jobs and now - self.last_request > idle_limit and not self.shutdown_ran:
                self.shutdown_ran = True
                log.warning("no job and no request for %.0f s: running the shutdown command", idle_limit)
                await asyncio.get_running_loop().run_in_executor(None, self._run_shutdown_command)
                self.stopping.set()

    def _run_shutdown_command(self) -> None:
        try:
            subprocess.run(self.config.shutdown_command, shell=True, timeout=60)
        except (subprocess.SubprocessError, OSError) as error:
            log.error("the shutdown command failed: %s", error)
