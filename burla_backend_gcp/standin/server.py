"""The stand-in's HTTP front door on 127.0.0.1: one port for every API, routed by path.

    request ─► route (from the client library's own HTTP rules, rest.py)
            ─► the caller, from its bearer token (401 otherwise)
            ─► the API must be enabled in the project (403 SERVICE_DISABLED otherwise)
            ─► an injected fault for this method, if a test set one (429, 503…)
            ─► the request message, parsed strictly ─► the API's handler ─► the answer message

Storage paths skip the message step and go to the storage emulator (storage.py); `POST /token`
is the OAuth endpoint for service-account keys. Every request is logged (`StandIn.requests`).
"""

from __future__ import annotations

import fnmatch
import json
import sys
import threading
import traceback
from collections import deque
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from .metadata import QuietServer
from .rest import ApiError, Call, Route, build_request, parse_query, to_json
from .storage import permission_for

if TYPE_CHECKING:
    from . import StandIn

_STORAGE_PREFIXES = ("/storage/v1/", "/upload/storage/v1/", "/download/storage/v1/")


@dataclass
class LoggedRequest:
    method: str
    path: str
    route: str  # the method's name ("compute.instances.insert"), "" if no route matched
    member: str
    status: int


@dataclass
class InjectedFault:
    pattern: str  # fnmatch over route names
    error: ApiError
    remaining: int


class Router:
    def __init__(self, standin: "StandIn"):
        self.standin = standin
        self.routes: list[Route] = []
        self.log: deque[LoggedRequest] = deque(maxlen=10_000)
        self._faults: list[InjectedFault] = []
        self._lock = threading.Lock()

    def add(self, routes: list[Route]) -> None:
        self.routes.extend(routes)

    def inject(self, pattern: str, error: ApiError, times: int = 1) -> None:
        with self._lock:
            self._faults.append(InjectedFault(pattern, error, times))

    def _take_fault(self, name: str) -> ApiError | None:
        with self._lock:
            for fault in self._faults:
                if fault.remaining > 0 and fnmatch.fnmatchcase(name, fault.pattern):
                    fault.remaining -= 1
                    return fault.error
        return None

    def handle(self, call: Call) -> tuple[int, list[tuple[str, str]], bytes]:
        try:
            if call.method == "POST" and call.path == "/token":
                call.route = "oauth2.token"
                return 200, [], json.dumps(self.standin.iam_admin.token(call.body)).encode()
            if call.path.startswith(_STORAGE_PREFIXES):
                return self._storage(call)
            for route in self.routes:
                match = route.pattern.match(call.path)
                if match is None or route.method != call.method:
                    continue
                call.route = route.name
                call.member = self.standin.iam.member_of(call.headers.get("authorization"))
                self.standin.projects.require_enabled(route.service)
                fault = self._take_fault(route.name)
                if fault is not None:
                    raise fault
                request = build_request(route, match, call)
                answer = route.handler(call, request, match) if route.pass_match else route.handler(call, request)
                return 200, [], to_json(answer, enums_as_ints=call.enums_as_ints)
            raise ApiError(404, f"The requested URL {call.path} was not found on this server "
                                f"(the stand-in does not serve {call.method} {call.path}).")
        except ApiError as error:
            return error.code, [], json.dumps(error.body()).encode()
        except Exception as exc:  # a bug in the stand-in: answer 500 with the cause, never hang up
            trace = traceback.format_exc()
            sys.stderr.write(f"gcp stand-in: {call.method} {call.path} failed:\n{trace}")
            error = ApiError(500, f"Internal error in the GCP stand-in: {type(exc).__name__}: {exc}")
            return 500, [], json.dumps(error.body()).encode()

    def _storage(self, call: Call) -> tuple[int, list[tuple[str, str]], bytes]:
        call.member = self.standin.iam.member_of(call.headers.get("authorization"))
        self.standin.projects.require_enabled("storage.googleapis.com")
        permission, bucket = permission_for(call.method, call.path)
        call.route = permission
        fault = self._take_fault(permission)
        if fault is not None:
            raise fault
        self.standin.iam.require(call.member, permission,
                                 f"projects/_/buckets/{bucket}" if bucket else f"projects/{self.standin.project_id}")
        resource = f"projects/_/buckets/{bucket}"
        before = self.standin.iam.get_policy(resource) if bucket else None
        if bucket and permission == "storage.buckets.setIamPolicy":
            # The emulator only stores a bucket's policy; the stand-in's IAM enforces it (a
            # bucket-level grant lets its members use the bucket, as on Google), and refuses
            # unknown roles and members (400) before anything is stored.
            self.standin.iam.set_policy(resource, _bucket_policy(call.body), check_etag=False)
        answer = self.standin.storage.forward(call.method, call.full_path, call.raw_headers or {}, call.body)
        if bucket and permission == "storage.buckets.setIamPolicy" and answer[0] != 200:
            self.standin.iam.set_policy(resource, before, check_etag=False)
        if bucket and permission == "storage.buckets.delete" and answer[0] in (200, 204):
            self.standin.iam.drop_policy(resource)
        return answer


def _bucket_policy(body: bytes):
    """A Cloud Storage JSON policy as the IAM message the stand-in's IAM keeps."""
    from google.iam.v1 import policy_pb2

    try:
        stored = json.loads(body or b"{}")
        policy = policy_pb2.Policy(version=int(stored.get("version") or 1))
        for binding in stored.get("bindings") or []:
            policy.bindings.add(role=binding["role"], members=list(binding.get("members") or []))
    except (ValueError, KeyError, TypeError, AttributeError) as error:
        raise ApiError(400, f"Invalid bucket IAM policy: {error}") from None
    return policy


def serve(standin: "StandIn", router: Router, port: int = 0) -> ThreadingHTTPServer:
    class ApiHandler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format, *args):  # noqa: A002 - the base class's signature
            pass

        def _read_body(self) -> bytes:
            if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
                chunks = []
                while True:
                    size = int(self.rfile.readline().split(b";", 1)[0].strip() or b"0", 16)
                    if size == 0:
                        while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                            pass  # trailers
                        return b"".join(chunks)
                    chunks.append(self.rfile.read(size))
                    self.rfile.readline()
            length = int(self.headers.get("Content-Length") or 0)
            return self.rfile.read(length) if length else b""

        def _dispatch(self) -> None:
            url = urlsplit(self.path)
            body = self._read_body()
            headers = {k.lower(): v for k, v in self.headers.items()}
            call = Call(self.command, url.path, parse_query(url.query), headers, body,
                        enums_as_ints="enum-encoding=int" in url.query, full_path=self.path,
                        raw_headers=dict(self.headers.items()))
            status, extra, data = router.handle(call)
            router.log.append(LoggedRequest(call.method, call.path, call.route, call.member, status))
            self.send_response(status)
            names = {k.lower() for k, _ in extra}
            for key, value in extra:
                self.send_header(key, value)
            if "content-type" not in names:
                self.send_header("Content-Type", "application/json; charset=UTF-8")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _dispatch  # noqa: N815 - http.server's naming

    server = QuietServer(("127.0.0.1", port), ApiHandler)
    server.request_queue_size = 128
    return server
