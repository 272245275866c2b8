"""The caller's client of the cluster service: JSON requests with the burla token, answers and
errors turned into Burla's typed errors. Standard library only (urllib): a caller needs no
Google library.

Errors: a 401 (expired, revoked or unknown token) is UnauthorizedError with the service's words
("run `burla login`"); "no_compatible_nodes" NoCompatibleNodes; "no_nodes" NoNodes; a service
that cannot be reached, after retries, ClusterUnreachable.
"""

from __future__ import annotations

import json
import ssl
import time
import urllib.error
import urllib.request

from burla_core.errors import BurlaError, NoCompatibleNodes, NoNodes, UnauthorizedError

from .errors import ClusterUnreachable
from .settings import GcpSettings

_CONTEXT: ssl.SSLContext | None = None  # loading the system's CAs takes tens of milliseconds: once


def tls_context() -> ssl.SSLContext:
    global _CONTEXT
    if _CONTEXT is None:
        _CONTEXT = ssl.create_default_context()
    return _CONTEXT


RETRY_SECONDS = 20.0  # how long connection failures and 5xx answers are retried
REQUEST_SECONDS = 30.0


class ClusterClient:
    def __init__(self, settings: GcpSettings) -> None:
        self.settings = settings

    @staticmethod
    def _context(url: str) -> ssl.SSLContext | None:
        return tls_context() if url.startswith("https://") else None

    def call(self, method: str, path: str, body: dict | None = None, timeout_s: float = REQUEST_SECONDS,
             retry_s: float = RETRY_SECONDS) -> dict:
        """The service's JSON answer; retries connection failures and 5xx for `retry_s`."""
        url = self.settings.cluster_url + path
        data = json.dumps(body).encode() if body is not None else None
        headers = {"Authorization": f"Bearer {self.settings.token}", "Accept": "application/json"}
        if data is not None:
            headers["Content-Type"] = "application/json"
        deadline = time.monotonic() + retry_s
        delay = 0.2
        while True:
            request = urllib.request.Request(url, data=data, method=method, headers=headers)
            try:
                with urllib.request.urlopen(request, timeout=timeout_s, context=self._context(url)) as answer:
                    return json.loads(answer.read() or b"{}")
            except urllib.error.HTTPError as error:
                if error.code < 500 or time.monotonic() > deadline:
                    raise _typed(error.code, _error_payload(error), self.settings) from None
            except (urllib.error.URLError, OSError) as error:
                if time.monotonic() > deadline:
                    reason = getattr(error, "reason", error)
                    raise ClusterUnreachable(
                        f"cannot reach the burla cluster at {self.settings.cluster_url} ({type(reason).__name__}: "
                        f"{reason}); check the URL (from {self.settings.source}) and your network"
                    ) from None
            time.sleep(delay)
            delay = min(delay * 2, 2.0)


def _error_payload(error: urllib.error.HTTPError) -> dict:
    try:
        payload = json.loads(error.read() or b"{}")
    except (ValueError, OSError):
        payload = {}
    return payload if isinstance(payload, dict) else {}


def _typed(status: int, payload: dict, settings: GcpSettings) -> BurlaError:
    code = payload.get("error", "")
    message = payload.get("message") or f"the cluster service answered HTTP {status}"
    if status == 401:
        return UnauthorizedError(f"the burla cluster at {settings.cluster_url} refused your token: {message}")
    if code == "no_compatible_nodes":
        return NoCompatibleNodes(message)
    if code == "no_nodes":
        return NoNodes(message)
    if status == 403:
        return UnauthorizedError(message)
    return ClusterServiceError(f"the burla cluster at {settings.cluster_url} answered HTTP {status}: {message}")


class ClusterServiceError(BurlaError):
    """The cluster service refused a request for another reason; the message is its own."""
