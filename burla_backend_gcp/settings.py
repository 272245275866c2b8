"""Which cluster a caller uses, and with which burla token: the one place that reads them.

    BURLA_GCP_CLUSTER_URL + BURLA_GCP_TOKEN        both set: they win (CI, scripts, a node's
                                                   nested calls)
    <data dir>/burla_credentials.json              else: what `burla login` wrote,
                                                   {"cluster_url", "token", "expires_at", "project"}

The data dir is Burla's (burla_core.config.data_dir: platformdirs' user data dir, or
$BURLA_DATA_DIR). No Google credentials are involved: the token is all a caller needs.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from burla_core import config
from burla_core.errors import ConfigError, UnauthorizedError

CLUSTER_URL_ENV = "BURLA_GCP_CLUSTER_URL"
TOKEN_ENV = "BURLA_GCP_TOKEN"
CREDENTIALS_FILE = "burla_credentials.json"
LOGIN_HINT = "run `burla login`"


def credentials_path() -> Path:
    return config.data_dir() / CREDENTIALS_FILE


@dataclass(frozen=True)
class GcpSettings:
    cluster_url: str
    token: str
    expires_at: float | None = None
    project: str | None = None
    source: str = ""  # where they came from, for messages

    def __repr__(self) -> str:  # never show the token
        return f"GcpSettings(cluster_url={self.cluster_url!r}, source={self.source!r})"

    @property
    def nested_env(self) -> dict[str, str]:
        """What a function running on a node needs for its own remote_parallel_map calls."""
        return {"BURLA_BACKEND": "gcp", CLUSTER_URL_ENV: self.cluster_url, TOKEN_ENV: self.token}

    @classmethod
    def load(cls, options: dict[str, Any] | None = None) -> "GcpSettings":
        """The environment's settings, else the credentials file's; UnauthorizedError (saying to run
        `burla login`) when there are none or the token has expired."""
        url = (os.environ.get(CLUSTER_URL_ENV) or "").strip()
        token = (os.environ.get(TOKEN_ENV) or "").strip()
        if url or token:
            if not (url and token):
                missing = TOKEN_ENV if url else CLUSTER_URL_ENV
                raise UnauthorizedError(f"{missing} is not set (set both {CLUSTER_URL_ENV} and {TOKEN_ENV}, or unset "
                                        f"both and {LOGIN_HINT})")
            return cls(_check_url(url, CLUSTER_URL_ENV), token, source=f"{CLUSTER_URL_ENV} and {TOKEN_ENV}")
        path = credentials_path()
        _refresh_if_due(path)
        return cls.from_file(path)

    @classmethod
    def from_file(cls, path: Path) -> "GcpSettings":
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise UnauthorizedError(f"this machine is not logged into a burla cluster: {LOGIN_HINT} (no {path})") from None
        except OSError as error:
            raise ConfigError(f"cannot read {path} ({error.strerror or error}); {LOGIN_HINT} to write it again") from None
        try:
            data = json.loads(text)
        except json.JSONDecodeError:
            data = None
        if not isinstance(data, dict) or not isinstance(data.get("cluster_url"), str) or not isinstance(data.get("token"), str):
            raise ConfigError(f"{path} is not a burla credentials file (it needs \"cluster_url\" and \"token\"); {LOGIN_HINT}")
        expires_at = data.get("expires_at")
        if expires_at is not None and not isinstance(expires_at, (int, float)):
            raise ConfigError(f"{path}: \"expires_at\" must be seconds since the epoch; {LOGIN_HINT}")
        if expires_at is not None and expires_at <= time.time():
            when = datetime.fromtimestamp(expires_at, tz=timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
            raise UnauthorizedError(f"your burla token expired on {when}: {LOGIN_HINT} to get a new one")
        return cls(_check_url(data["cluster_url"], str(path)), data["token"], expires_at, data.get("project"), str(path))


def _check_url(url: str, source: str) -> str:
    url = url.strip().rstrip("/")
    if not url.startswith(("https://", "http://")):
        raise ConfigError(f"the cluster URL from {source} must start with https:// (got {url!r}); {LOGIN_HINT}")
    return url


def _refresh_if_due(path: Path) -> None:
    """A token in its last week is traded for a new one first (credentials.py); a cluster that
    cannot be reached just now leaves the old one, still valid, in place."""
    from . import credentials
    from .errors import ClusterUnreachable

    try:
        credentials.refresh_if_due(path)
    except ClusterUnreachable:
        pass
