"""What the service hands callers to reach the nodes: the node token and the cluster CA's
certificate, read from Secret Manager with the service's account (cached: they change only when
`burla install` rotates them, which restarts the service)."""

from __future__ import annotations

import threading

from aiohttp import web

from burla_core.types import NodeAccess

from .. import schema

ACCESS = web.AppKey("node_access", NodeAccess)
_lock = threading.Lock()


def read_secret(project: str, name: str) -> str:
    from .. import clients

    answer = clients.secret_manager().access_secret_version(name=f"projects/{project}/secrets/{name}/versions/latest")
    return answer.payload.data.decode()


def node_access(app: web.Application) -> NodeAccess:
    """The node token and the CA PEM (blocking the first time)."""
    from .app import SETTINGS

    with _lock:
        if ACCESS not in app:
            project = app[SETTINGS].project
            token = read_secret(project, schema.NODE_TOKEN_SECRET).strip()
            app[ACCESS] = NodeAccess(token=token, ca_pem=read_secret(project, schema.CA_CERT_SECRET))
        return app[ACCESS]
