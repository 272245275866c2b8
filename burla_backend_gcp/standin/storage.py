"""Cloud Storage in the stand-in: gcp-storage-emulator behind the stand-in's own front door.

The emulator (PyPI `gcp-storage-emulator`, in-process, in memory) implements the JSON API the
storage client speaks: buckets, objects, resumable uploads, bucket IAM. The stand-in forwards
`/storage/v1/…`, `/upload/storage/v1/…` and `/download/storage/v1/…` to it after its own checks —
a valid bearer token and the permission the call needs (`storage.buckets.create`,
`storage.objects.get`…) on the project or the bucket — so Storage answers 401/403 like the other
APIs. The Host header is passed on, so the resumable-upload URLs it returns point back at the
stand-in. Known gaps of the emulator (GCP.md): preconditions such as `ifGenerationMatch` are
ignored, and bucket `location` is always "US". Google's storage JSON API has no protobuf message
types, so bodies here are checked by the emulator, not by `rest.parse_strict`.
"""

from __future__ import annotations

import http.client
import re
import socket
import threading

_BUCKET_PATH = re.compile(r"^/(?:upload/|download/)?storage/v1/b(?:/(?P<bucket>[^/?]+))?(?P<rest>/[^?]*)?")
_HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade", "proxy-authorization"}


def permission_for(method: str, path: str) -> tuple[str, str | None]:
    """The IAM permission a storage call needs, and the bucket it is about (None: the project)."""
    match = _BUCKET_PATH.match(path)
    if match is None:
        return "storage.buckets.list", None
    bucket, rest = match.group("bucket"), match.group("rest") or ""
    if bucket is None:
        return ("storage.buckets.create" if method == "POST" else "storage.buckets.list"), None
    if rest.startswith("/iam/testPermissions"):
        return "storage.buckets.get", bucket
    if rest.startswith("/iam"):
        return ("storage.buckets.setIamPolicy" if method == "PUT" else "storage.buckets.getIamPolicy"), bucket
    if rest.startswith("/o"):
        verb = {"GET": "get", "POST": "create", "PUT": "create", "PATCH": "update", "DELETE": "delete"}[method]
        if method == "GET" and rest.rstrip("/") == "/o":
            verb = "list"
        return f"storage.objects.{verb}", bucket
    verb = {"GET": "get", "PATCH": "update", "PUT": "update", "DELETE": "delete"}.get(method, "get")
    return f"storage.buckets.{verb}", bucket


class StorageBackend:
    """The in-process emulator and a forwarder to it."""

    def __init__(self) -> None:
        from gcp_storage_emulator.server import create_server

        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = sock.getsockname()[1]
        self._server = create_server("127.0.0.1", self.port, in_memory=True)
        self._server.start()
        self._local = threading.local()

    def _connection(self) -> http.client.HTTPConnection:
        connection = getattr(self._local, "connection", None)
        if connection is None:
            connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
            self._local.connection = connection
        return connection

    def forward(self, method: str, path: str, headers: dict[str, str], body: bytes) -> tuple[int, list[tuple[str, str]], bytes]:
        forwarded = {k: v for k, v in headers.items() if k.lower() not in _HOP_BY_HOP and k.lower() != "content-length"}
        if body or method in ("POST", "PUT", "PATCH"):
            forwarded["Content-Length"] = str(len(body))
        for attempt in range(2):
            connection = self._connection()
            try:
                connection.request(method, path, body=body or None, headers=forwarded)
                response = connection.getresponse()
                data = response.read()
                answer = [(k, v) for k, v in response.getheaders() if k.lower() not in _HOP_BY_HOP
                          and k.lower() != "content-length"]
                return response.status, answer, data
            except (http.client.HTTPException, OSError):
                connection.close()
                self._local.connection = None
                if attempt:
                    raise
        raise AssertionError("unreachable")

    def close(self) -> None:
        self._server.stop()
