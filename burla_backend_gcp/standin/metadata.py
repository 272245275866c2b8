"""The GCE metadata server, one per identity: a simulated VM, a Cloud Run service, a workstation.

Real VMs and Cloud Run containers learn who they are from `http://metadata.google.internal`; the
stand-in gives each identity its own server on 127.0.0.1 and points the process at it with
`GCE_METADATA_HOST` / `GCE_METADATA_IP` (which `google.auth` reads) and `BURLA_METADATA_URL`
(for scripts and curl, instead of 169.254.169.254). It answers like Google's: `Metadata-Flavor:
Google` required on requests and sent on answers, directories listed with trailing slashes,
`?recursive=true` as JSON, `instance/preempted` with `?wait_for_change=true`, and tokens for the
identity's service account, minted by the stand-in's IAM so API calls carry them.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable
from urllib.parse import parse_qs, urlsplit

from .iam import Iam

SCOPES = ["https://www.googleapis.com/auth/cloud-platform"]


class QuietServer(ThreadingHTTPServer):
    """A threading HTTP server that does not print a traceback when a client hangs up early (a
    long poll whose process was killed, a probe that closed its socket)."""

    daemon_threads = True

    def handle_error(self, request, client_address) -> None:
        import sys

        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


@dataclass
class MetadataIdentity:
    """What one metadata server says about the machine asking it."""

    project_id: str
    project_number: int
    service_account: str  # email
    instance_id: int
    name: str
    zone: str = ""  # "us-central1-a" for a VM
    region: str = ""  # "us-central1" for a Cloud Run service
    machine_type: str = ""
    image: str = ""
    attributes: dict[str, str] = field(default_factory=dict)
    project_attributes: dict[str, str] = field(default_factory=dict)
    scopes: list[str] = field(default_factory=lambda: list(SCOPES))
    network_ip: str = "127.0.0.1"
    member: str = ""  # whom its tokens name; "" means serviceAccount:<service_account>
    preempted: bool = False
    maintenance_event: str = "NONE"
    _changed: threading.Condition = field(default_factory=threading.Condition, repr=False)

    def set_preempted(self) -> None:
        with self._changed:
            self.preempted = True
            self.maintenance_event = "TERMINATE_ON_HOST_MAINTENANCE"
            self._changed.notify_all()

    def wait_for_change(self, read: Callable[[], str], previous: str, timeout_s: float) -> str:
        deadline = time.monotonic() + timeout_s
        with self._changed:
            while read() == previous:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._changed.wait(left)
            return read()


class MetadataServer:
    """Serves one identity's metadata on 127.0.0.1 (an ephemeral port unless one is given)."""

    def __init__(self, identity: MetadataIdentity, iam: Iam, *, id_token_key: bytes, port: int = 0):
        self.identity = identity
        self.iam = iam
        self._id_token_key = id_token_key
        self._server = QuietServer(("127.0.0.1", port), _handler_for(self))
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), name=f"metadata-{identity.name}",
                                        daemon=True)
        self._thread.start()

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self._server.server_address[1]}"

    @property
    def url(self) -> str:
        return f"http://{self.host}"

    def environment(self) -> dict[str, str]:
        """What a process needs in its environment to find this server."""
        return {"GCE_METADATA_HOST": self.host, "GCE_METADATA_IP": self.host, "BURLA_METADATA_URL": self.url}

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    # ------------------------------------------------------------ the tree

    def token(self) -> dict:
        lifetime = 3599
        member = self.identity.member or f"serviceAccount:{self.identity.service_account}"
        token = self.iam.mint(member, lifetime_s=lifetime)
        return {"access_token": token, "expires_in": lifetime, "token_type": "Bearer"}

    def id_token(self, audience: str) -> str:
        """An OpenID Connect token shaped like Google's (`aud`, `email`, `sub`…), signed HS256 with
        the stand-in's key (real ones are RS256 with Google's keys, which nothing here verifies)."""
        now = int(time.time())
        claims = {"iss": "https://accounts.google.com", "aud": audience, "azp": self.identity.service_account,
                  "email": self.identity.service_account, "email_verified": True,
                  "sub": str(int(hashlib.sha256(self.identity.service_account.encode()).hexdigest()[:15], 16)), "iat": now, "exp": now + 3600}

        def b64(data: bytes) -> str:
            return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

        head = b64(json.dumps({"alg": "HS256", "typ": "JWT", "kid": "standin"}).encode())
        body = b64(json.dumps(claims).encode())
        signature = hmac.new(self._id_token_key, f"{head}.{body}".encode(), hashlib.sha256).digest()
        return f"{head}.{body}.{b64(signature)}"

    def tree(self) -> dict:
        """The metadata as a tree of dicts and strings, as `?recursive=true` shows it."""
        ident = self.identity
        account = {"aliases": ["default"], "email": ident.service_account, "scopes": ident.scopes}
        instance: dict = {
            "id": str(ident.instance_id), "name": ident.name, "hostname": f"{ident.name}.c.{ident.project_id}.internal",
            "attributes": dict(ident.attributes), "preempted": "TRUE" if ident.preempted else "FALSE",
            "maintenance-event": ident.maintenance_event,
            "service-accounts": {"default": account, ident.service_account: account},
            "network-interfaces": {"0": {"ip": ident.network_ip, "network": f"projects/{ident.project_number}/networks/default",
                                         "access-configs": {"0": {"external-ip": ident.network_ip, "type": "ONE_TO_ONE_NAT"}}}},
        }
        if ident.zone:
            instance["zone"] = f"projects/{ident.project_number}/zones/{ident.zone}"
            instance["machine-type"] = f"projects/{ident.project_number}/machineTypes/{ident.machine_type}"
            instance["image"] = ident.image
        if ident.region:
            instance["region"] = f"projects/{ident.project_number}/regions/{ident.region}"
        return {
            "instance": instance,
            "project": {"project-id": ident.project_id, "numeric-project-id": str(ident.project_number),
                        "attributes": dict(ident.project_attributes)},
        }


def _handler_for(server: MetadataServer) -> type[BaseHTTPRequestHandler]:
    class MetadataHandler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format, *args):  # noqa: A002 - the base class's signature
            pass

        def _answer(self, status: int, body: str, content_type: str = "application/text") -> None:
            data = body.encode()
            self.send_response(status)
            self.send_header("Metadata-Flavor", "Google")
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:  # noqa: N802 - http.server's naming
            url = urlsplit(self.path)
            query = {k: v[-1] for k, v in parse_qs(url.query).items()}
            if url.path in ("", "/"):
                self._answer(200, "computeMetadata/\n")
                return
            if self.headers.get("Metadata-Flavor") != "Google" and self.headers.get("X-Google-Metadata-Request") != "True":
                self._answer(403, "Missing required header \"Metadata-Flavor\": \"Google\"\n", "text/html")
                return
            prefix = "/computeMetadata/v1"
            if not url.path.startswith(prefix):
                self._answer(404, "Not Found\n", "text/html")
                return
            parts = [p for p in url.path[len(prefix):].split("/") if p]
            if len(parts) == 4 and parts[:2] == ["instance", "service-accounts"] and parts[3] == "token":
                self._answer(200, json.dumps(server.token()), "application/json")
                return
            if len(parts) == 4 and parts[:2] == ["instance", "service-accounts"] and parts[3] == "identity":
                audience = query.get("audience")
                if not audience:
                    self._answer(400, "non-empty audience parameter required\n")
                    return
                self._answer(200, server.id_token(audience))
                return
            node: object = server.tree()
            for part in parts:
                if not isinstance(node, dict) or part not in node:
                    self._answer(404, "Not Found\n", "text/html")
                    return
                node = node[part]
            if parts[-2:] == ["instance", "preempted"] and query.get("wait_for_change") == "true":
                timeout = float(query.get("timeout_sec", 60))
                node = server.identity.wait_for_change(
                    lambda: "TRUE" if server.identity.preempted else "FALSE", str(node), timeout)
            if isinstance(node, dict):
                if query.get("recursive") == "true" or query.get("alt") == "json":
                    self._answer(200, json.dumps(node), "application/json")
                else:
                    listing = "".join(f"{k}/\n" if isinstance(v, dict) else f"{k}\n" for k, v in node.items())
                    self._answer(200, listing)
                return
            if isinstance(node, list):
                self._answer(200, "".join(f"{item}\n" for item in node))
                return
            self._answer(200, json.dumps(node) if query.get("alt") == "json" else str(node))

    return MetadataHandler
