"""This computer's way into a cluster: `burla_credentials.json` in Burla's user data directory
(platformdirs', or $BURLA_DATA_DIR), written by `burla login`, readable by its owner only.

    {"cluster_url": "https://burla-cluster-….run.app", "token": "burla_…",
     "expires_at": 1767225600.0, "project": "my-project"}

`save` writes it atomically with mode 0600 (a reader never sees half a file, and no other user
can read the token). `refresh_if_due` trades a token with less than a week left for a new one
(POST /v1/tokens/refresh), so a computer in daily use never has to log in again; a token the
cluster refuses (revoked, expired, another cluster's) is an UnauthorizedError that says to run
`burla login`. settings.py is the reader the gcp backend uses.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from burla_core.errors import UnauthorizedError

from . import schema
from .service_http import ClusterRefused, post_json
from .settings import CREDENTIALS_FILE, credentials_path  # noqa: F401  (the file's name has one owner)


@dataclass(frozen=True)
class SavedCredentials:
    cluster_url: str
    token: str
    expires_at: float
    project: str | None = None

    def __repr__(self) -> str:  # never show the token
        return f"SavedCredentials(cluster_url={self.cluster_url!r}, expires_at={self.expires_at!r})"


def read(path: Path | None = None) -> SavedCredentials | None:
    """The saved credentials, or None when there are none (or the file is not ours)."""
    path = path or credentials_path()
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not (isinstance(data, dict) and isinstance(data.get("cluster_url"), str) and isinstance(data.get("token"), str)
            and isinstance(data.get("expires_at"), (int, float))):
        return None
    return SavedCredentials(data["cluster_url"], data["token"], float(data["expires_at"]), data.get("project"))


def save(credentials: SavedCredentials, path: Path | None = None) -> Path:
    """Write the credentials file atomically, mode 0600; its path."""
    path = path or credentials_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, temporary = tempfile.mkstemp(prefix=".burla_credentials.", dir=path.parent)  # made 0600
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8") as out:
            json.dump(asdict(credentials), out, indent=2)
            out.write("\n")
        os.replace(temporary, path)
    except BaseException:
        try:
            os.unlink(temporary)
        except OSError:
            pass
        raise
    return path


def refresh_if_due(path: Path | None = None, *, now: float | None = None,
                   margin_s: float = schema.TOKEN_REFRESH_SECONDS) -> SavedCredentials | None:
    """Refresh the saved token if it expires within `margin_s`; the credentials now saved (None
    if there are none). A token the cluster refuses raises UnauthorizedError ("run burla login");
    an expired one is left for settings.py to refuse, with its date."""
    path = path or credentials_path()
    saved = read(path)
    if saved is None:
        return None
    now = time.time() if now is None else now
    if saved.expires_at <= now or saved.expires_at - now > margin_s:
        return saved  # an expired one cannot be refreshed: its reader says when it expired, and to log in
    try:
        answer = post_json(saved.cluster_url + "/v1/tokens/refresh", {}, token=saved.token)
    except ClusterRefused as refused:
        if refused.status in (401, 403):
            raise UnauthorizedError(f"{saved.cluster_url} refused this computer's token ({refused.message}): "
                                    f"run `burla login`") from None
        raise
    fresh = SavedCredentials(saved.cluster_url, answer["token"], float(answer["expires_at"]), saved.project)
    save(fresh, path)
    return fresh
