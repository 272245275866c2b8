"""Who is calling the cluster service: every request is authenticated before its handler runs.

    Authorization: Bearer burla_…            a user token (`burla login`, or issued by an admin):
                                              found by its SHA-256 in user_tokens, unexpired, not revoked
    Authorization: Bearer <Google token>      an administrator of the project: the token's holder may
    X-Burla-Credential: google                read the cluster secret (testIamPermissions on it)

Other modules add ways in (the dashboard's session cookie) by appending an authenticator to
`app[AUTHENTICATORS]`: an async function of the request that returns a Caller or None. A
handler marked `@public` (health checks, the sign-in page) skips all of this.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Awaitable, Callable

from aiohttp import web

from .. import schema
from .responses import ApiFailure

GOOGLE_CREDENTIAL_HEADER = "X-Burla-Credential"
ADMIN_CACHE_SECONDS = 60.0
TOKEN_CACHE_SECONDS = 30.0  # a revoked token may keep working this long (its expiry is checked every time)
PUBLIC_MARK = "burla_public"


@dataclass(frozen=True)
class Caller:
    """Whom a request comes from. `kind`: "user" (a user token), "runner" (a detached job's runner,
    whose token serves `job_id` only) or "google" (an administrator's Google credentials)."""

    email: str
    admin: bool
    kind: str
    job_id: str | None = None


Authenticator = Callable[[web.Request], Awaitable["Caller | None"]]
AUTHENTICATORS = web.AppKey("authenticators", list)
CALLER = "burla_caller"  # request[CALLER]


def public(handler):
    """Mark a handler as open to anyone (it must check what it needs itself)."""
    setattr(handler, PUBLIC_MARK, True)
    return handler


def caller_of(request: web.Request) -> Caller:
    return request[CALLER]


def require_admin(request: web.Request) -> Caller:
    caller = caller_of(request)
    if not caller.admin:
        raise ApiFailure(403, "admin_required", "only an administrator of this cluster may do this")
    return caller


def bearer(request: web.Request) -> str | None:
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    return value.strip() or None if scheme.lower() == "bearer" else None


def _when(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, tz=timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


class TokenCache:
    """Token records and admin flags, remembered for TOKEN_CACHE_SECONDS: every request of a
    call needs them, and reading Firestore for each would be most of a warm call's time. What
    revokes a token or changes a user (login.py's refresh, the dashboard's users) forgets it here
    at once; other instances of the service see the change within TOKEN_CACHE_SECONDS."""

    def __init__(self) -> None:
        self.tokens: dict[str, tuple[float, schema.UserToken | None]] = {}
        self.admins: dict[str, tuple[float, bool]] = {}

    async def token(self, request: web.Request, store_of: Callable[[web.Request], object],
                    token: str) -> schema.UserToken | None:
        key = schema.token_hash(token)
        cached = self.tokens.get(key)
        if cached is not None and time.monotonic() - cached[0] < TOKEN_CACHE_SECONDS:
            return cached[1]
        record = await asyncio.to_thread(store_of(request).token, token)
        if len(self.tokens) > 10_000:
            self.tokens.clear()
        self.tokens[key] = (time.monotonic(), record)
        return record

    async def is_admin(self, request: web.Request, store_of: Callable[[web.Request], object], email: str) -> bool:
        cached = self.admins.get(email)
        if cached is not None and time.monotonic() - cached[0] < TOKEN_CACHE_SECONDS:
            return cached[1]
        admin = await asyncio.to_thread(store_of(request).is_admin, email)
        if len(self.admins) > 10_000:
            self.admins.clear()
        self.admins[email] = (time.monotonic(), admin)
        return admin

    def forget_token(self, token: str) -> None:
        self.tokens.pop(schema.token_hash(token), None)

    def forget_user(self, email: str) -> None:
        self.admins.pop(email, None)
        for key, (_, record) in list(self.tokens.items()):
            if record is not None and record.email == email:
                self.tokens.pop(key, None)


TOKEN_CACHE = web.AppKey("token_cache", TokenCache)


def user_token_authenticator(store_of: Callable[[web.Request], object], cache: TokenCache) -> Authenticator:
    async def authenticate(request: web.Request) -> Caller | None:
        token = bearer(request)
        if token is None or request.headers.get(GOOGLE_CREDENTIAL_HEADER):
            return None
        if not token.startswith(schema.TOKEN_PREFIX):
            raise ApiFailure(401, "token_unknown", "that is not a burla token; run `burla login` to get one")
        record = await cache.token(request, store_of, token)
        if record is None:
            raise ApiFailure(401, "token_unknown",
                             "this cluster does not know your burla token (it may be another cluster's); run `burla login`")
        if record.revoked:
            raise ApiFailure(401, "token_revoked", "your burla token was revoked; run `burla login` for a new one")
        if not record.valid():
            raise ApiFailure(401, "token_expired",
                             f"your burla token expired on {_when(record.expires_at)}; run `burla login` for a new one")
        admin = record.kind == schema.TOKEN_KIND_USER and await cache.is_admin(request, store_of, record.email)
        return Caller(email=record.email, admin=admin, kind=record.kind, job_id=record.job_id)

    return authenticate


class GoogleAdminCheck:
    """Whether a Google access token's holder may read the cluster secret: asked of Secret
    Manager with that token (testIamPermissions), remembered for a minute per token."""

    def __init__(self, project: str) -> None:
        self.project = project
        self._seen: dict[str, tuple[float, bool]] = {}

    def allowed(self, google_token: str) -> bool:
        key = schema.token_hash(google_token)
        seen = self._seen.get(key)
        if seen is not None and time.monotonic() - seen[0] < ADMIN_CACHE_SECONDS:
            return seen[1]
        from google.api_core import exceptions
        from google.oauth2.credentials import Credentials

        from .. import clients

        client = clients.secret_manager(credentials=Credentials(token=google_token))
        resource = f"projects/{self.project}/secrets/{schema.CLUSTER_SECRET}"
        try:
            answer = client.test_iam_permissions(request={"resource": resource, "permissions": ["secretmanager.versions.access"]})
            allowed = "secretmanager.versions.access" in answer.permissions
        except (exceptions.Unauthenticated, exceptions.PermissionDenied, exceptions.NotFound):
            allowed = False
        if len(self._seen) > 10_000:
            self._seen.clear()
        self._seen[key] = (time.monotonic(), allowed)
        return allowed


def google_admin_authenticator(check: GoogleAdminCheck) -> Authenticator:
    async def authenticate(request: web.Request) -> Caller | None:
        if request.headers.get(GOOGLE_CREDENTIAL_HEADER, "").lower() != "google":
            return None
        token = bearer(request)
        if token is None:
            raise ApiFailure(401, "unauthenticated", f"{GOOGLE_CREDENTIAL_HEADER}: google needs a Google access token as the bearer")
        if not await asyncio.to_thread(check.allowed, token):
            raise ApiFailure(403, "not_an_admin",
                             f"these Google credentials may not read the cluster secret {schema.CLUSTER_SECRET}, "
                             "so they are not an administrator's")
        return Caller(email=request.headers.get("X-Burla-Admin-Email", "admin"), admin=True, kind="google")

    return authenticate


@web.middleware
async def authenticate(request: web.Request, handler):
    route_handler = request.match_info.handler
    if getattr(route_handler, PUBLIC_MARK, False) or request.match_info.http_exception is not None:
        return await handler(request)
    for authenticator in request.app[AUTHENTICATORS]:
        caller = await authenticator(request)
        if caller is not None:
            request[CALLER] = caller
            return await handler(request)
    raise ApiFailure(401, "unauthenticated", "this request carries no burla token; run `burla login`")
