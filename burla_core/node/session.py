"""One job on one node agent, from the caller's side: the http transport's NodeSession.

    scheduler thread                     client loop thread (loop.py)
    ────────────────                     ────────────────────────────────────────────────────
    open_session ──────────────────────► HttpSession._run: POST /v1/jobs, then the event stream
    submit(batch) ──call_soon_threadsafe─► unfinished[batch] ─► uploader (in order) ─POST batches─► node
                                                        ▲ 429: wait and retry; 404: node restarted
    EventSink ◄── RESULTS / LOGS / ERROR ◄── only inputs still unfinished ◄── frames (seq) ◄── node
                                          acker: POST ack?seq= (at least every second) ────► node
    close / cancel ─────────────────────► DELETE / POST cancel ──────────────────────────────► node

A session remembers every input it sent until its result or error arrives, and passes an event on
only for an input it still holds: whatever the network does, each input reaches the scheduler
once. A stream that drops reconnects with `after=` the last frame it has; one silent for
STALL_SECONDS is dropped and reconnected. A node that answered nothing (no frame, not even a
heartbeat) for `loss_seconds` is reported NODE_LOST (after which the session puts nothing more),
and the scheduler re-runs its unfinished inputs elsewhere. A node whose agent restarted (same
address, job unknown) gets the job again and the unfinished inputs re-sent, so a restart costs
only the calls that were running. The acker's acknowledgements are also the caller's heartbeat:
the node cancels a job whose caller stopped sending them for its lease.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import logging
import os
import time
from typing import Any

import msgpack

from ..errors import ServerError, UnauthorizedError
from ..interfaces import NodeSession
from ..types import ERROR, LOGS, NODE_LOST, NOTICE, NODE_STATUS, RESULTS, ErrorInfo, EventSink, InputBatch, JobSpec, NodeInfo
from .client import JobGone, NodeClient, NodeUnreachable
from .loop import ExitCloser, close_at_exit, forget_at_exit
from .frames import BATCH_CONTENT_TYPE, encode_batch
from .protocol import HELLO, PARENT_JOB_ENV, ProtocolError, burla_version, python_version

log = logging.getLogger("burla.node.session")

RECONNECT_SECONDS = 0.2
# One: a node gets its batches in the order the scheduler submitted them. With two, a read-ahead
# batch could overtake a first-round one still uploading (a TLS handshake on a new connection)
# and take the slot meant for it.
UPLOADERS_PER_SESSION = 1
ACK_INTERVAL = 0.05
CALLER_HEARTBEAT_SECONDS = 1.0  # an ack at least this often, even with nothing new: "still here"
CLOSE_SECONDS = 2.5


class SessionFatal(Exception):
    """The node answered, and the answer means this session cannot go on (a message says why)."""


class HttpSession(NodeSession, ExitCloser):
    def __init__(
        self,
        client: NodeClient,
        node: NodeInfo,
        job: JobSpec,
        slots: int,
        events: EventSink,
        loss_seconds: float,
        nested_env: dict[str, str] | None = None,
        environment_fields: dict | None = None,
    ) -> None:
        self.client = client
        self.node_id = node.node_id
        self.slots = slots
        self.job = job
        self.events = events
        self.loss_seconds = loss_seconds
        self.nested_env = dict(nested_env or {})
        self.environment_fields = environment_fields or {}  # the caller's packages and local code
        self.loop = client.thread.loop
        # Everything below is touched on the client loop thread only.
        self.batches: dict[int, dict[int, bytes]] = {}  # batch_id -> unfinished index -> payload
        self.batch_of: dict[int, int] = {}
        self.upload_queue: collections.deque = collections.deque()
        self.upload_ready = asyncio.Event()
        self.ack_wanted = asyncio.Event()
        self.received = 0  # seq of the last event passed on
        self.instance: str | None = None
        self.lost = False
        self.closing = False
        self.stopped = False
        self.last_heard = time.monotonic()
        self.last_error = ""
        self.tasks: list[asyncio.Task] = []  # kept referenced: the loop holds only weak references
        self._closed: concurrent.futures.Future | None = None
        self._canceled: concurrent.futures.Future | None = None
        close_at_exit(self)
        client.thread.start(self._start())

    # --- the scheduler's side (any thread) ---------------------------------------------------

    def submit(self, batch: InputBatch) -> None:
        self.loop.call_soon_threadsafe(self._on_submit, batch)

    def cancel(self) -> None:
        if self._canceled is None:
            self._canceled = self.client.thread.start(self._cancel())

    def is_stopped(self) -> bool:
        """After cancel(): the node says the job's calls stopped, and every event up to that
        moment (the output they wrote) has arrived."""
        if self._canceled is None or self.lost or self.closing:
            return True
        if not self._canceled.done():
            return False
        try:
            stopped_at = self._canceled.result()
        except Exception:
            return True
        return stopped_at is None or self.received >= stopped_at

    def close(self) -> None:
        if self._closed is None:
            forget_at_exit(self)
            self._closed = self.client.thread.start(self._close())

    def wait_stopped(self, timeout: float) -> bool:
        if self._closed is None:
            return True
        try:
            return bool(self._closed.result(timeout))
        except concurrent.futures.TimeoutError:
            return False
        except Exception:
            log.warning("ending job %s on node %s failed", self.job.job_id, self.node_id, exc_info=True)
            return False

    async def close_at_exit(self) -> None:
        """The process exits with this job still open (a generator result never finished)."""
        await self._close()

    # --- the loop's side ---------------------------------------------------------------------

    async def _start(self) -> None:
        self.last_heard = time.monotonic()
        runners = [self._stream_loop(), self._watchdog(), self._acker()]
        runners += [self._uploader() for _ in range(UPLOADERS_PER_SESSION)]
        self.tasks = [asyncio.create_task(runner) for runner in runners]

    def _on_submit(self, batch: InputBatch) -> None:
        if self.lost or self.closing:
            return  # the scheduler already requeued (or no longer wants) what this node had
        unfinished = dict(batch.items)
        self.batches[batch.batch_id] = unfinished
        for input_index in unfinished:
            self.batch_of[input_index] = batch.batch_id
        self.upload_queue.append(batch.batch_id)
        self.upload_ready.set()

    def _heard(self) -> None:
        self.last_heard = time.monotonic()

    async def _create_job(self) -> None:
        job = self.job
        request = msgpack.packb(
            {
                "job_id": job.job_id,
                "function": job.function_bytes,
                "function_name": job.function_name,
                "slots": self.slots,
                "func_cpu": job.resources.func_cpu,
                "func_ram": job.resources.func_ram,
                "func_gpu": job.resources.func_gpu,
                "image": job.resources.image,
                "python": python_version(),
                "burla": burla_version(),
                "nested_env": self.nested_env,
                "parent_job": os.environ.get(PARENT_JOB_ENV) or None,
                **self.environment_fields,
            },
            use_bin_type=True,
        )
        status, answer, _ = await self.client.call("POST", "/jobs", request)
        self._heard()
        if status in (200, 201):
            self.instance = answer.get("instance")
            return
        if status == 401:
            raise SessionFatal("it refused the token (use the token its agent was started with)")
        raise SessionFatal(f"it refused the job ({status}): {answer.get('message', answer)}")

    async def _stream_loop(self) -> None:
        created = False
        while not self.closing and not self.lost:
            try:
                if not created:
                    await self._create_job()
                    created = True
                await self.client.read_frames(self.job.job_id, self.received, self._on_frame, self._heard)
            except JobGone:
                if self.closing:
                    return
                created = False
                self._restarted()
            except NodeUnreachable as error:
                self.last_error = str(error)
            except (ProtocolError, ServerError, UnauthorizedError) as error:
                self.last_error = str(error)
            except SessionFatal as error:
                self._report_lost(str(error))
                return
            except ValueError as error:  # a frame that is not msgpack: drop the stream, replay
                self.last_error = f"a broken frame ({error})"
            if self.closing or self.lost:
                return
            await asyncio.sleep(RECONNECT_SECONDS)

    def _restarted(self) -> None:
        """The node forgot the job (its agent restarted): start over there with what is unfinished."""
        self.received = 0
        self.instance = None
        unfinished = [batch_id for batch_id, items in self.batches.items() if items]
        count = sum(len(self.batches[batch_id]) for batch_id in unfinished)
        self.upload_queue.clear()
        self.upload_queue.extend(unfinished)
        if count:
            self.events.put([NOTICE, self.node_id, f"node {self.node_id} lost job {self.job.job_id} (its agent restarted?); re-sending its {count} unfinished input(s)"])
        self.upload_ready.set()

    def _on_frame(self, seq: int, kind: str, data: Any) -> None:
        self.last_heard = time.monotonic()
        if seq == 0:
            if kind == HELLO and isinstance(data, dict):
                instance = data.get("instance")
                if self.instance is not None and instance != self.instance:
                    raise JobGone("the agent restarted")
            return
        if seq <= self.received or self.lost or self.closing:
            return  # a replay of what we have
        if seq != self.received + 1:
            raise ProtocolError(f"event {seq} arrived after event {self.received}")
        self.received = seq
        self.ack_wanted.set()
        if kind == RESULTS:
            kept = []
            for entry in data:
                if self._settle(entry[0]):
                    kept.append(entry)
            if kept:
                self.events.put([RESULTS, self.node_id, kept])
        elif kind == ERROR:
            if self._settle(data[0]):
                self.events.put([ERROR, self.node_id, (data[0], ErrorInfo.from_wire(data[1]))])
        elif kind == LOGS:
            self.events.put([LOGS, self.node_id, data])
        elif kind == NOTICE:
            self.events.put([NOTICE, self.node_id, f"node {self.node_id}: {data}"])
        elif kind == NODE_STATUS:
            self.events.put([NODE_STATUS, self.node_id, data if isinstance(data, str) else ""])

    def _settle(self, input_index: int) -> bool:
        """True the first time an input finishes here; False for anything this session does not
        hold (a result seen before), so the scheduler never sees an input twice."""
        batch_id = self.batch_of.pop(input_index, None)
        if batch_id is None:
            return False
        unfinished = self.batches.get(batch_id)
        if unfinished is not None:
            unfinished.pop(input_index, None)
            if not unfinished:
                del self.batches[batch_id]
        return True

    async def _uploader(self) -> None:
        while not self.closing and not self.lost:
            if not self.upload_queue:
                self.upload_ready.clear()
                await self.upload_ready.wait()
                continue
            batch_id = self.upload_queue.popleft()
            await self._upload(batch_id)

    async def _upload(self, batch_id: int) -> None:
        while not self.closing and not self.lost:
            if self.instance is None:  # creating (or re-creating) the job: wait for it
                await asyncio.sleep(0.02)
                continue
            unfinished = self.batches.get(batch_id)
            if not unfinished:
                return
            instance = self.instance
            body = encode_batch(batch_id, list(unfinished.items()))
            try:
                status, answer, headers = await self.client.call(
                    "POST", f"/jobs/{self.job.job_id}/batches", body, content_type=BATCH_CONTENT_TYPE
                )
            except NodeUnreachable as error:
                self.last_error = str(error)
                await asyncio.sleep(RECONNECT_SECONDS)
                continue
            self._heard()
            if status in (200, 202):
                return
            if status == 429:
                await asyncio.sleep(min(float(headers.get("Retry-After", "1") or 1), 1.0))
                continue
            if status == 404:
                # The agent restarted: the stream loop sees it too and re-sends what is unfinished.
                if self.instance == instance:
                    self.instance = None
                return
            if status == 409 and answer.get("error") == "job_canceled":
                return
            self._report_lost(f"it refused a batch of inputs ({status}): {answer.get('message', answer)}")
            return

    async def _acker(self) -> None:
        """Acknowledge what arrived, and at least every CALLER_HEARTBEAT_SECONDS say "still
        here" (the node's lease of the job counts only what the caller sends)."""
        acked = 0
        while not self.closing and not self.lost:
            try:
                await asyncio.wait_for(self.ack_wanted.wait(), CALLER_HEARTBEAT_SECONDS)
            except asyncio.TimeoutError:
                pass
            self.ack_wanted.clear()
            seq = self.received
            if self.instance is not None:
                try:
                    status, _, _ = await self.client.call("POST", f"/jobs/{self.job.job_id}/ack", params={"seq": str(seq)}, timeout=5.0)
                    if status == 200:
                        acked = max(acked, seq)
                except NodeUnreachable:
                    pass  # the next stream's after= acknowledges too
            await asyncio.sleep(ACK_INTERVAL)

    async def _watchdog(self) -> None:
        while not self.closing and not self.lost:
            await asyncio.sleep(0.25)
            silent = time.monotonic() - self.last_heard
            if silent > self.loss_seconds:
                detail = f" (last error: {self.last_error})" if self.last_error else ""
                self._report_lost(f"no answer for {silent:.1f} s{detail}")

    def _report_lost(self, reason: str) -> None:
        if self.lost or self.closing:
            return
        self.lost = True
        self.events.put([NODE_LOST, self.node_id, reason])
        for task in self.tasks:
            if task is not asyncio.current_task():
                task.cancel()
        # If the node is only slow, ask it to drop the job (its lease would, later).
        self.tasks.append(asyncio.ensure_future(self._forget_on_node(timeout=5.0)))

    async def _forget_on_node(self, timeout: float) -> bool:
        try:
            status, answer, _ = await self.client.call("DELETE", f"/jobs/{self.job.job_id}", timeout=timeout)
        except NodeUnreachable:
            return False
        return status == 404 or bool(answer.get("stopped"))

    async def _cancel(self) -> int | None:
        """The seq of the node's last event once its calls stopped (None: it could not say)."""
        try:
            status, answer, _ = await self.client.call("POST", f"/jobs/{self.job.job_id}/cancel", timeout=5.0)
        except NodeUnreachable:
            return None
        if status != 200 or not answer.get("stopped"):
            return None
        last_seq = answer.get("last_seq")
        return last_seq if isinstance(last_seq, int) else None

    async def _close(self) -> bool:
        if self.closing:
            return True
        was_lost = self.lost
        self.closing = True
        for task in self.tasks:
            task.cancel()
        if was_lost:
            return True
        return await self._forget_on_node(timeout=CLOSE_SECONDS)
