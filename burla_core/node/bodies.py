"""How the node agent reads request bodies (into one buffer, on huge pages) and refuses a request
(`RequestRejected` → a JSON error answer with a status and a code)."""

from __future__ import annotations

from aiohttp import web

from ..buffers import private_buffer
from .frames import WRITE_SLICE_BYTES


def error_response(status: int, code: str, message: str, headers: dict | None = None) -> web.Response:
    return web.json_response({"error": code, "message": message}, status=status, headers=headers)


class RequestRejected(Exception):
    def __init__(self, status: int, code: str, message: str, headers: dict | None = None) -> None:
        super().__init__(message)
        self.response = error_response(status, code, message, headers)


async def read_body(request: web.Request, limit: int, what: str) -> bytearray | memoryview:
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
