"""JSON requests to a cluster service from `burla login` and `burla dashboard`, which talk to it
before this computer has a burla token (or with a Google token): standard library only, one
attempt, a deadline on every request. A refusal is ClusterRefused with the service's own error
code and words; a service that does not answer is ClusterUnreachable."""

from __future__ import annotations

import json
import ssl
import urllib.error
import urllib.request
from typing import Any

from burla_core.errors import BurlaError

from . import netguard
from .errors import ClusterUnreachable

REQUEST_SECONDS = 30.0


class ClusterRefused(BurlaError):
    """The service answered with an error: `status` (HTTP), `code` and `message` (its JSON)."""

    def __init__(self, status: int, code: str, message: str):
        self.status, self.code, self.message = status, code, message
        super().__init__(f"{message} (HTTP {status}, {code})")


def post_json(url: str, body: dict[str, Any], *, token: str | None = None, headers: dict[str, str] | None = None,
              timeout_s: float = REQUEST_SECONDS) -> dict[str, Any]:
    netguard.install_if_asked()
    sent = {"Content-Type": "application/json", "Accept": "application/json", **(headers or {})}
    if token:
        sent["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST", headers=sent)
    context = ssl.create_default_context() if url.startswith("https://") else None
    try:
        with urllib.request.urlopen(request, timeout=timeout_s, context=context) as answer:
            return json.loads(answer.read() or b"{}")
    except urllib.error.HTTPError as error:
        try:
            payload = json.loads(error.read() or b"{}")
        except ValueError:
            payload = {}
        if not isinstance(payload, dict):
            payload = {}
        raise ClusterRefused(error.code, str(payload.get("error") or "http_error"),
                             str(payload.get("message") or error.reason)) from None
    except (urllib.error.URLError, OSError) as error:
        reason = getattr(error, "reason", error)
        raise ClusterUnreachable(f"cannot reach the burla cluster at {url.split('/v1/')[0]} ({reason}); check the "
                                 f"address and your network") from None
