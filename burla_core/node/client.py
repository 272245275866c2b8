"""Requests to one node agent: the caller's HTTP client for the node protocol (protocol.py).

One `NodeClient` per (node URL, token, CA) and process, its connections pooled, its requests made
on the client loop (loop.py). Blocking helpers (`health`, `list_jobs`, ...) are for any other
thread: the CLI and provisioners.
"""

from __future__ import annotations

import asyncio
import json
import ssl
import threading
from typing import Any, Awaitable, Callable

import aiohttp

from ..buffers import private_buffer
from ..errors import InvalidArgument, ServerError, UnauthorizedError
from .loop import LoopThread, loop_thread, on_exit_close_clients
from .frames import WRITE_SLICE_BYTES, decode_frame_body, slices
from .protocol import API_PREFIX, FRAME_HEADER, MAX_FRAME_BYTES, MSGPACK_CONTENT_TYPE, ProtocolError

CONNECT_SECONDS = 3.0
STALL_SECONDS = 3.0  # no byte on an event stream for this long: drop it and reconnect
REQUEST_SECONDS = 30.0
LARGE_FRAME_BYTES = 1 << 20
RECEIVE_BUFFER_KEEP_SECONDS = 10.0  # a node's buffer for big frames is kept this long unused


class NodeUnreachable(Exception):
    """A request got no answer (refused, reset, timed out)."""


class JobGone(Exception):
    """The node no longer has the job: its agent restarted, or it canceled the job."""


_clients: dict[tuple, "NodeClient"] = {}
_clients_lock = threading.Lock()


def node_client(url: str, token: str, ca_file: str | None = None, ca_pem: str | None = None) -> "NodeClient":
    """The process's client for one node (connections are pooled per node)."""
    key = (url, token, ca_file, ca_pem)
    thread = loop_thread()
    with _clients_lock:
        client = _clients.get(key)
        if client is None or client.thread is not thread:
            client = _clients[key] = NodeClient(url, token, ca_file, ca_pem, thread)
        return client


async def _close_clients() -> None:
    with _clients_lock:
        clients = list(_clients.values())
    for client in clients:
        await client.aclose()


on_exit_close_clients(_close_clients)


def ssl_context_for(url: str, ca_file: str | None, ca_pem: str | None = None) -> ssl.SSLContext | bool:
    """False for http://; for https://, the system's CAs or the given cluster CA."""
    if not url.startswith("https://"):
        return False
    try:
        if ca_pem:
            return ssl.create_default_context(cadata=ca_pem)
        return ssl.create_default_context(cafile=ca_file) if ca_file else ssl.create_default_context()
    except FileNotFoundError:
        raise InvalidArgument(f"the node CA certificate file {ca_file} does not exist; give the path of the CA that signed the nodes' certificates") from None
    except (OSError, ssl.SSLError) as error:
        raise InvalidArgument(f"cannot load the node CA certificate {ca_file or '(from the cluster)'}: {error}") from None


def parse_error_body(raw: bytes) -> dict:
    """A node's answer as a dict: its JSON object, or the start of whatever else it sent."""
    try:
        answer = json.loads(raw) if raw else {}
    except ValueError:
        return {"message": raw[:200].decode("utf-8", "replace")}
    return answer if isinstance(answer, dict) else {"value": answer}


def describe_failure(error: BaseException) -> str:
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

    def __init__(self, url: str, token: str, ca_file: str | None, ca_pem: str | None, thread: LoopThread) -> None:
        self.url = url.rstrip("/")
        self.thread = thread
        self.ssl = ssl_context_for(self.url, ca_file, ca_pem)
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
                return response.status, parse_error_body(await response.read()), response.headers
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as error:
            raise NodeUnreachable(describe_failure(error)) from None

    def raise_for(self, status: int, answer: dict, what: str) -> None:
        if status == 401:
            raise UnauthorizedError(f"node {self.url} refused the token while {what}: use the token its agent was started with")
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

    async def read_frames(
        self, job_id: str, after: int, on_frame: Callable[[int, str, Any], None], on_bytes: Callable[[], None] | None = None
    ) -> None:
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
                    self.raise_for(response.status, parse_error_body(await response.read()), "streaming events")
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
            raise NodeUnreachable(describe_failure(error)) from None


async def _sliced(pieces: list):
    for piece in slices(pieces):
        yield piece


async def read_into(reader: aiohttp.StreamReader, body: memoryview, on_bytes: Callable[[], None] | None = None) -> memoryview:
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


def gather_blocking(calls: list[Awaitable], timeout: float) -> list:
    """Run several requests at once from a thread that is not the loop's; their results."""

    async def all_of() -> list:
        return await asyncio.gather(*calls)

    return loop_thread().run(all_of(), timeout=timeout)
