"""The cluster service's web application: `make_app(settings)` builds it, with every route of the
API; other modules extend it (`app.router.add_routes(...)`, `app[AUTHENTICATORS].append(...)`).

    caller (burla token) ──► auth middleware (auth.py) ──► /v1/... handlers (api.py, detached.py)
                                                              │ ClusterStore (Firestore)
                                                              │ NodeRegistry (watches nodes)
                                                              └ Grower (creates / deletes VMs)

What the app holds for its handlers, by key: SETTINGS, STORE, REGISTRY, GROWER. They are made
when the app starts (on_startup), so building the app touches no Google API.
"""

from __future__ import annotations

import asyncio
import logging

from aiohttp import web

from .auth import (AUTHENTICATORS, TOKEN_CACHE, GoogleAdminCheck, TokenCache, authenticate, google_admin_authenticator,
                   public, user_token_authenticator)
from .settings import ServiceSettings

SETTINGS = web.AppKey("settings", ServiceSettings)
STORE = web.AppKey("store", object)  # store.ClusterStore
REGISTRY = web.AppKey("registry", object)  # registry.NodeRegistry
GROWER = web.AppKey("grower", object)  # grow.Grower
JOBS = web.AppKey("jobs", object)  # jobs.JobBook

CHORES = web.AppKey("chores", asyncio.Task)

MAX_REQUEST_BYTES = 32 * 1024 * 1024
CHORE_SECONDS = 1.0
log = logging.getLogger("burla.cluster")  # Cloud Run's limit on an HTTP/1 request


@public
async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"ok": True})


def store_of(request: web.Request):
    return request.app[STORE]


async def _start(app: web.Application) -> None:
    from .grow import Grower
    from .jobs import JobBook
    from .registry import NodeRegistry
    from .store import ClusterStore

    settings = app[SETTINGS]
    if STORE not in app:
        app[STORE] = ClusterStore(settings.project, settings.database)
    if GROWER not in app:
        app[GROWER] = Grower(settings, app[STORE])
    app[JOBS] = JobBook(app[STORE])
    app[REGISTRY] = NodeRegistry(app[STORE], app[GROWER], poll_s=settings.node_poll_s)
    await app[REGISTRY].start()
    # The Compute Engine client takes a second to import: ready before the first grow needs it.
    asyncio.get_running_loop().run_in_executor(None, app[GROWER].compute.warm)
    app[CHORES] = asyncio.create_task(_chores(app), name="burla-cluster-chores")


async def _chores(app: web.Application) -> None:
    """What the service does between requests: place detached jobs' runners once a node serves,
    notice runners that went silent."""
    from .detached import place_waiting_runners

    while True:
        await asyncio.sleep(CHORE_SECONDS)
        try:
            await place_waiting_runners(app)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.warning("placing detached jobs' runners failed", exc_info=True)


async def _stop(app: web.Application) -> None:
    if CHORES in app:
        app[CHORES].cancel()
    if REGISTRY in app:
        await app[REGISTRY].stop()
    if GROWER in app:
        app[GROWER].close()
    if JOBS in app:
        app[JOBS].close()


def make_app(settings: ServiceSettings) -> web.Application:
    """The cluster service for `settings`, with the whole API (api.py, detached.py), sign-in and
    login (login.py) and the dashboard (dashboard.py)."""
    from . import api, dashboard, detached, login

    app = web.Application(middlewares=[authenticate], client_max_size=MAX_REQUEST_BYTES)
    app[SETTINGS] = settings
    app[TOKEN_CACHE] = TokenCache()
    app[AUTHENTICATORS] = [
        user_token_authenticator(store_of, app[TOKEN_CACHE]),
        google_admin_authenticator(GoogleAdminCheck(settings.project)),
    ]
    app.router.add_get("/healthz", healthz)
    app.router.add_routes(api.routes)
    app.router.add_routes(detached.routes)
    app.on_startup.append(_start)
    app.on_cleanup.append(_stop)
    login.setup(app)
    dashboard.setup(app)
    return app
