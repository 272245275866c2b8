"""The caller's side of the node protocol: the `http` transport.

    scheduler thread                     client loop thread (one per process, asyncio + aiohttp)
    ────────────────                     ─────────────────────────────────────────────────────
    open_session ──────────────────────► HttpSession._run: POST /v1/jobs, then the event stream
    submit(batch) ──call_soon_threadsafe─► unfinished[batch] ─► uploaders (2) ─POST batches─► node
                                                        ▲ 429: wait and retry; 404: node restarted
    EventSink ◄── RESULTS / LOGS / ERROR ◄── only inputs still unfinished ◄── frames (seq) ◄── node
                                          acker: POST ack?seq= ──────────────────────────────► node
    close / cancel ─────────────────────► DELETE / POST cancel ──────────────────────────────► node

A session remembers every input it sent until its result or error arrives, and passes an event on
only for an input it still holds: whatever the network does, each input reaches the scheduler
once. A stream that drops reconnects with `after=` the last frame it has; one silent for
STALL_SECONDS is dropped and reconnected. A node that answered nothing (no frame, not even a
heartbeat) for `loss_seconds` is reported NODE_LOST, and the scheduler re-runs its unfinished
inputs elsewhere. A node whose agent restarted (same address, job unknown) gets the job again and
the unfinished inputs re-sent, so a restart costs only the calls that were running.
"""

from __future__ import annotations

import asyncio
import atexit
import collections
import concurrent.futures
import json
import os
import ssl
import threading
import time
from typing import Any

import aiohttp
import msgpack

from ..errors import InvalidArgument, ServerError, UnauthorizedError
from ..memory import private_buffer
from ..interfaces import NodeSession, Transport
from ..types import ERROR, LOGS, NODE_LOST, NOTICE, RESULTS, EventSink, InputBatch, JobSpec, NodeInfo
from .protocol import (
    API_PREFIX,
    BATCH_CONTENT_TYPE,
    WRITE_SLICE_BYTES,
    encode_batch,
    slices,
    FRAME_HEADER,
    HELLO,
    MAX_FRAME_BYTES,
    MSGPACK_CONTENT_TYPE,
    ProtocolError,
    burla_version,
    decode_frame_body,
    python_version,
)

CONNECT_SECONDS = 3.0
STALL_SECONDS = 3.0  # no byte on an event stream for this long: drop it and reconnect
LOSS_SECONDS = 6.0  # no answer from a node for this long: it is lost (detected well within 10 s)
RECONNECT_SECONDS = 0.2
UPLOADERS_PER_SESSION = 2
ACK_INTERVAL = 0.05
REQUEST_SECONDS = 30.0
LARGE_FRAME_BYTES = 1 << 20
RECEIVE_BUFFER_KEEP_SECONDS = 10.0  # a node's buffer for big frames is kept this long unused
TOKEN_ENV = "BURLA_NODE_TOKEN"
CA_ENV = "BURLA_NODE_CA"
NODES_ENV = "BURLA_NODES"


class NodeUnreachable(Exception):
    """A request got no answer (refused, reset, timed out)."""


class JobGone(Exception):
    """The node no longer has the job: its agent restarted, or it canceled the job."""


class SessionFatal(Exception):
    """The node answered, and the answer means this session cannot go on (a message says why)."""


# --- the client event loop --------------------------------------------------------------------


class _LoopThread:
    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="burla-http-client", daemon=True)
        self.thread.start()

    def run(self, coroutine, timeout: float | None = None) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout)

    def start(self, coroutine) -> concurrent.futures.Future:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop)


_loop_thread: _LoopThread | None = None
_clients: dict[tuple, "NodeClient"] = {}
_lock = threading.Lock()


def loop_thread() -> _LoopThread:
    global _loop_thread
    with _lock:
        if _loop_thread is None:
            _loop_thread = _LoopThread()
        return _loop_thread


def _forget_in_child() -> None:
    global _loop_thread, _lock
    _loop_thread = None
    _clients.clear()
    _lock = threading.Lock()


def _close_clients() -> None:
    if _loop_thread is None:
        return
    clients = list(_clients.values())

    async def close_all() -> None:
        for client in clients:
            await client.aclose()

    try:
        _loop_thread.run(close_all(), timeout=1.0)
    except Exception:
        pass


os.register_at_fork(after_in_child=_forget_in_child)
atexit.register(_close_clients)


def node_client(url: str, token: str, ca_file: str | None = None) -> "NodeClient":
    """The process's client for one node (connections are pooled per node)."""
    key = (url, token, ca_file)
    thread = loop_thread()
    with _lock:
        client = _clients.get(key)
        if client is None:
            client = _clients[key] = NodeClient(url, token, ca_file, thread)
        return client


def ssl_context_for(url: str, ca_file: str | None) -> ssl.SSLContext | bool:
    if not url.startswith("https://"):
        return False
    try:
        return ssl.create_default_context(cafile=ca_file) if ca_file else ssl.create_default_context()
    except (OSError, ssl.SSLError) as error:
        raise ServerError(f"cannot load the node CA certificate {ca_file}: {error}") from None


def _describe(error: BaseException) -> str:
    if isinstance(error, asyncio.TimeoutError):
        return "timed out"
    if isinstance(error, aiohttp.ClientConnectorCertificateError):
        return f"its TLS certificate was not accepted ({error.certificate_error})"
    if isinstance(error, aiohttp.ClientSSLError):
        return f"TLS failed ({type(error).__name__})"
    if isinstance(error, aiohttp.ClientConnectorError):
        return f"cannot connect ({error.os_error.strerror or error.os_error})"
    text = str(error)
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


class NodeClient:
    """Requests to one node agent, made on the client loop thread."""

    def __init__(self, url: str, token: str, ca_file: str | None, thread: _LoopThread) -> None:
        self.url = url.rstrip("/")
        self.thread = thread
        self.ssl = ssl_context_for(self.url, ca_file)
        self._headers = {"Authorization": f"Bearer {token}"}
        self._session: aiohttp.ClientSession | None = None
        self._receive_buffer: memoryview | None = None
        self._receive_buffer_taken = False
        self._receive_view: memoryview | None = None
        self._receive_buffer_drop: asyncio.TimerHandle | None = None

    def __repr__(self) -> str:  # never show the token
        return f"NodeClient({self.url!r})"

    def session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(limit=64, ssl=self.ssl, enable_cleanup_closed=False)
            self._session = aiohttp.ClientSession(connector=connector, headers=self._headers)
        return self._session

    async def aclose(self) -> None:
        if self._session is not None and not self._session.closed:
            await self._session.close()

    def take_receive_buffer(self, length: int) -> memoryview:
        """A buffer for one big frame, reused from frame to frame while they keep coming (filling
        pages already mapped costs a fraction of faulting fresh ones in); a fresh one while
        another stream of this node has it. Frames read into it are decoded without keeping
        views of it, and it is handed back with `give_back_receive_buffer`."""
        buffer = self._receive_buffer
        if self._receive_buffer_taken:
            return private_buffer(length)
        if buffer is None or buffer.nbytes < length:
            self._receive_buffer = None  # drop the old one before mapping a bigger one
            buffer = self._receive_buffer = private_buffer(length)
        self._receive_buffer_taken = True
        self._receive_view = buffer[:length]
        return self._receive_view

    def give_back_receive_buffer(self, view: memoryview) -> None:
        if view is self._receive_view:
            self._receive_buffer_taken = False
            self._receive_view = None
        view.release()
        if self._receive_buffer_drop is not None:
            self._receive_buffer_drop.cancel()
        self._receive_buffer_drop = asyncio.get_running_loop().call_later(RECEIVE_BUFFER_KEEP_SECONDS, self._drop_receive_buffer)

    def _drop_receive_buffer(self) -> None:
        if not self._receive_buffer_taken:
            self._receive_buffer = None
        self._receive_buffer_drop = None

    def path(self, suffix: str) -> str:
        return f"{self.url}{API_PREFIX}{suffix}"

    async def call(
        self,
        method: str,
        suffix: str,
        body: bytes | list | None = None,
        timeout: float = REQUEST_SECONDS,
        params: dict | None = None,
        content_type: str = MSGPACK_CONTENT_TYPE,
    ) -> tuple[int, dict, Any]:
        """(status, JSON answer, headers). NodeUnreachable when no answer came. A `body` given as
        a list of pieces is sent piece by piece, in slices, with no copy of the payloads."""
        headers = None
        data: Any = body
        if body is not None:
            headers = {"Content-Type": content_type}
            if isinstance(body, list):
                headers["Content-Length"] = str(sum(len(piece) for piece in body))
                data = _sliced(body)
        client_timeout = aiohttp.ClientTimeout(total=None, sock_connect=CONNECT_SECONDS, sock_read=timeout)
        try:
            async with self.session().request(
                method, self.path(suffix), data=data, headers=headers, timeout=client_timeout, params=params
            ) as response:
                raw = await response.read()
                try:
                    answer = json.loads(raw) if raw else {}
                except ValueError:
                    answer = {"message": raw[:200].decode("utf-8", "replace")}
                return response.status, answer if isinstance(answer, dict) else {"value": answer}, response.headers
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as error:
            raise NodeUnreachable(_describe(error)) from None

    def raise_for(self, status: int, answer: dict, what: str) -> None:
        if status == 401:
            raise UnauthorizedError(
                f"node {self.url} refused the token while {what}: set {TOKEN_ENV} to the token its agent was started with"
            )
        if status >= 400:
            raise ServerError(f"node {self.url} answered {status} while {what}: {answer.get('message', answer)}")

    # --- blocking helpers (any thread but the loop's) ---------------------------------------

    def _blocking(self, method: str, suffix: str, what: str, timeout: float) -> dict:
        async def go() -> dict:
            status, answer, _ = await self.call(method, suffix, timeout=timeout)
            self.raise_for(status, answer, what)
            return answer

        try:
            return self.thread.run(go(), timeout=timeout + CONNECT_SECONDS + 1)
        except NodeUnreachable as error:
            raise NodeUnreachable(f"node {self.url} did not answer while {what}: {error}") from None

    def health(self, timeout: float = 5.0) -> dict:
        return self._blocking("GET", "/health", "reporting its health", timeout)

    def list_jobs(self, timeout: float = 5.0) -> list[dict]:
        return self._blocking("GET", "/jobs", "listing its jobs", timeout)["jobs"]

    def job_status(self, job_id: str, timeout: float = 5.0) -> dict:
        return self._blocking("GET", f"/jobs/{job_id}", f"reporting job {job_id}", timeout)

    def delete_job(self, job_id: str, timeout: float = 5.0) -> dict:
        return self._blocking("DELETE", f"/jobs/{job_id}", f"ending job {job_id}", timeout)

    # --- the event stream ------------------------------------------------------------------

    async def read_frames(self, job_id: str, after: int, on_frame, on_bytes=None) -> None:
        """Call `on_frame(seq, kind, data)` for every frame of the job's stream from `after`,
        until the stream ends or stays silent STALL_SECONDS. Raises JobGone on 404."""
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=CONNECT_SECONDS, sock_read=STALL_SECONDS)
        try:
            async with self.session().get(
                self.path(f"/jobs/{job_id}/events"), params={"after": str(after)}, timeout=timeout
            ) as response:
                if response.status == 404:
                    raise JobGone(f"node {self.url} no longer has job {job_id}")
                if response.status != 200:
                    raw = await response.read()
                    try:
                        answer = json.loads(raw)
                    except ValueError:
                        answer = {"message": raw[:200].decode("utf-8", "replace")}
                    self.raise_for(response.status, answer, "streaming events")
                reader = response.content
                header_size = FRAME_HEADER.size
                while True:
                    header = await reader.readexactly(header_size)
                    (length,) = FRAME_HEADER.unpack(header)
                    if length > MAX_FRAME_BYTES:
                        raise ProtocolError(f"node {self.url} sent a frame of {length} bytes")
                    if length <= LARGE_FRAME_BYTES:
                        body = await reader.readexactly(length)
                        seq, kind, data = decode_frame_body(body)
                    else:
                        body = self.take_receive_buffer(length)
                        try:
                            await read_into(reader, body, on_bytes)
                            seq, kind, data = decode_frame_body(body, keep_views=False)
                        finally:
                            self.give_back_receive_buffer(body)
                    on_frame(seq, kind, data)
        except asyncio.IncompleteReadError:
            return  # the stream ended (mid-frame or not): the caller reconnects with after=
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as error:
            raise NodeUnreachable(_describe(error)) from None


async def _sliced(pieces: list):
    for piece in slices(pieces):
        yield piece


async def read_into(reader, body: memoryview, on_bytes=None) -> memoryview:
    """Fill `body` from a stream (readexactly would join its pieces over and over); `on_bytes()`
    after each piece, so that a slow link still counts as a node that answers."""
    length = body.nbytes
    position = 0
    while position < length:
        chunk = await reader.read(min(length - position, WRITE_SLICE_BYTES))
        if not chunk:
            raise asyncio.IncompleteReadError(bytes(body[:position]), length)
        body[position : position + len(chunk)] = chunk
        position += len(chunk)
        if on_bytes is not None:
            on_bytes()
    return body


# --- the transport ---------------------------------------------------------------------------


def parse_node_list(value: Any) -> list[str]:
    """Node URLs from "http://a:8701,https://b:8701" or a list; "host:port" means http://host:port."""
    if value is None:
        return []
    if isinstance(value, str):
        parts = value.split(",")
    elif isinstance(value, (list, tuple)):
        parts = list(value)
    else:
        raise InvalidArgument(f"the node list must be a comma-separated string or a list of URLs, not {type(value).__name__}")
    urls: list[str] = []
    for part in parts:
        url = str(part).strip().rstrip("/")
        if not url:
            continue
        if "://" not in url:
            url = "http://" + url
        scheme = url.split("://", 1)[0].lower()
        if scheme not in ("http", "https"):
            raise InvalidArgument(f"node {url!r}: use an http:// or https:// URL")
        if url not in urls:
            urls.append(url)
    return urls



def cluster_urls(options: dict) -> list[str]:
    """The nodes a call may use: backend_options["nodes"], else $BURLA_NODES."""
    return parse_node_list(options.get("nodes") or os.environ.get(NODES_ENV))



def transport_settings(options: dict) -> tuple[str, str | None, float]:
    """(token, CA file, loss seconds): the token from BURLA_NODE_TOKEN or the backend option
    `token_file` (never from backend_options itself: those are stored with detached jobs)."""
    token = os.environ.get(TOKEN_ENV, "").strip()
    token_file = options.get("token_file")
    if token_file:
        try:
            with open(token_file, encoding="utf-8") as handle:
                token = handle.read().strip()
        except OSError as error:
            raise UnauthorizedError(f"cannot read the node token file {token_file}: {error.strerror}") from None
    if not token:
        raise UnauthorizedError(
            f"the nodes backend needs the node token: set {TOKEN_ENV} (the token the agents were started with)"
        )
    ca_file = options.get("ca") or os.environ.get(CA_ENV) or None
    loss = float(options.get("loss_seconds") or os.environ.get("BURLA_NODE_LOSS_SECONDS") or LOSS_SECONDS)
    return token, ca_file, loss


class HttpTransport(Transport):
    """Reaches node agents over HTTP(S); each NodeInfo's `address` is the agent's URL."""

    def __init__(self, options: dict | None = None) -> None:
        super().__init__(options)
        self.token, self.ca_file, self.loss_seconds = transport_settings(self.options)
        self.cluster = cluster_urls(self.options)

    def open_session(self, node: NodeInfo, job: JobSpec, slots: int, events: EventSink) -> NodeSession:
        client = node_client(node.address, self.token, self.ca_file)
        return HttpSession(client, node, job, slots, events, self.loss_seconds, self.cluster)


class HttpSession(NodeSession):
    def __init__(
        self,
        client: NodeClient,
        node: NodeInfo,
        job: JobSpec,
        slots: int,
        events: EventSink,
        loss_seconds: float,
        cluster: list[str] | None = None,
    ) -> None:
        self.client = client
        self.node_id = node.node_id
        self.slots = slots
        self.job = job
        self.events = events
        self.loss_seconds = loss_seconds
        self.cluster = list(cluster or [node.address])
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
        self.tasks: list[asyncio.Task] = []
        self._closed: concurrent.futures.Future | None = None
        self._canceled: concurrent.futures.Future | None = None
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
            self._closed = self.client.thread.start(self._close())

    def wait_stopped(self, timeout: float) -> bool:
        if self._closed is None:
            return True
        try:
            return bool(self._closed.result(timeout))
        except (concurrent.futures.TimeoutError, Exception):
            return False

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
                "detach": False,
                "cluster": self.cluster,
            },
            use_bin_type=True,
        )
        status, answer, _ = await self.client.call("POST", "/jobs", request)
        self._heard()
        if status in (200, 201):
            self.instance = answer.get("instance")
            return
        if status == 401:
            raise SessionFatal(f"it refused the token (set {TOKEN_ENV} to the token its agent was started with)")
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
                self.events.put([ERROR, self.node_id, (data[0], data[1])])
        elif kind == LOGS:
            self.events.put([LOGS, self.node_id, data])
        elif kind == NOTICE:
            self.events.put([NOTICE, self.node_id, f"node {self.node_id}: {data}"])

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
        acked = 0
        while not self.closing and not self.lost:
            await self.ack_wanted.wait()
            self.ack_wanted.clear()
            seq = self.received
            if seq > acked and self.instance is not None:
                try:
                    status, _, _ = await self.client.call("POST", f"/jobs/{self.job.job_id}/ack", params={"seq": str(seq)}, timeout=5.0)
                    if status == 200:
                        acked = seq
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
        unfinished = len(self.batch_of)
        self.events.put([NOTICE, self.node_id, f"node {self.node_id} was lost ({reason}); its {unfinished} unfinished input(s) go to the other nodes"])
        self.events.put([NODE_LOST, self.node_id, reason])
        for task in self.tasks:
            if task is not asyncio.current_task():
                task.cancel()
        # If the node is only slow, ask it to drop the job (its lease would, later).
        asyncio.ensure_future(self._forget_on_node(timeout=5.0))

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
        was_lost = self.lost
        self.closing = True
        for task in self.tasks:
            task.cancel()
        if was_lost:
            return True
        # detach=True needs nothing here: its runner process is this session's caller, and it
        # outlives the user's; when the runner stops, the job stops on the nodes too.
        return await self._forget_on_node(timeout=2.5)
