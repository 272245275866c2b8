"""Plain-HTTP helpers for the node agent's tests: send anything, well-formed or not."""

from __future__ import annotations

import http.client
import urllib.parse

import msgpack

from burla_core import __version__
from burla_core.node.frames import encode_batch
from burla_core.node.protocol import FRAME_HEADER, python_version
from burla_core.serialization import cloudpickle_dumps


class Http:
    """Plain requests to one agent, so that tests can send anything, well-formed or not."""

    def __init__(self, url: str, token: str | None) -> None:
        parsed = urllib.parse.urlparse(url)
        self.host, self.port = parsed.hostname, parsed.port
        self.token = token

    def request(self, method: str, path: str, body: bytes | None = None, token: str | None = "default",
                headers: dict | None = None, timeout: float = 10.0):
        connection = http.client.HTTPConnection(self.host, self.port, timeout=timeout)
        all_headers = dict(headers or {})
        token = self.token if token == "default" else token
        if token is not None:
            all_headers["Authorization"] = f"Bearer {token}"
        connection.request(method, path, body=body, headers=all_headers)
        response = connection.getresponse()
        data = response.read()
        connection.close()
        return response.status, dict(response.getheaders()), data

    def create_job(self, job_id: str, function, slots: int = 2, **fields):
        message = {
            "job_id": job_id,
            "function": cloudpickle_dumps(function),
            "function_name": getattr(function, "__name__", "f"),
            "slots": slots,
            "func_cpu": 1,
            "func_ram": 1,
            "func_gpu": None,
            "image": None,
            "python": python_version(),
            "burla": __version__,
            "detach": False,
        }
        message.update(fields)
        return self.request("POST", "/v1/jobs", msgpack.packb(message, use_bin_type=True))

    def post_batch(self, job_id: str, batch_id: int, items: list):
        return self.request("POST", f"/v1/jobs/{job_id}/batches", b"".join(encode_batch(batch_id, items)))

    def post_raw_batch(self, job_id: str, head, payload: bytes = b""):
        """A batch body with any header at all (msgpack of `head`, or `head` itself if bytes)."""
        head_bytes = head if isinstance(head, bytes) else msgpack.packb(head, use_bin_type=True)
        return self.request("POST", f"/v1/jobs/{job_id}/batches", FRAME_HEADER.pack(len(head_bytes)) + head_bytes + payload)




def read_events(url: str, token: str, job_id: str, after: int = 0, until=None, timeout: float = 15.0,
                cut_after_bytes: int | None = None) -> list[list]:
    """Frames of a job's event stream (seq > 0 only), read until `until(frames)` is true, the
    time runs out, or `cut_after_bytes` of the body were read (then the connection is dropped,
    possibly in the middle of a frame, and the frames read whole so far are returned)."""
    import time

    from burla_core.node.frames import decode_frame_body
    from burla_core.node.protocol import FRAME_HEADER

    parsed = urllib.parse.urlparse(url)
    connection = http.client.HTTPConnection(parsed.hostname, parsed.port, timeout=timeout)
    connection.request("GET", f"/v1/jobs/{job_id}/events?after={after}", headers={"Authorization": f"Bearer {token}"})
    response = connection.getresponse()
    assert response.status == 200, f"events stream answered {response.status}: {response.read()!r}"
    frames: list[list] = []
    buffer = b""
    read_so_far = 0
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            chunk = response.read1(65536)
            if not chunk:
                break
            if cut_after_bytes is not None and read_so_far + len(chunk) >= cut_after_bytes:
                buffer += chunk[: cut_after_bytes - read_so_far]
                read_so_far = cut_after_bytes
            else:
                buffer += chunk
                read_so_far += len(chunk)
            while len(buffer) >= 4:
                (length,) = FRAME_HEADER.unpack(buffer[:4])
                if len(buffer) < 4 + length:
                    break
                frame = decode_frame_body(buffer[4 : 4 + length])
                buffer = buffer[4 + length :]
                if frame[0] > 0:
                    frames.append(frame)
            if cut_after_bytes is not None and read_so_far >= cut_after_bytes:
                break
            if until is not None and until(frames):
                break
    finally:
        connection.sock.close() if connection.sock else None
        connection.close()
    return frames


def result_indices(frames: list[list]) -> list[int]:
    return [entry[0] for seq, kind, data in frames if kind == "results" for entry in data]
