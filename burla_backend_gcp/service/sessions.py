"""Dashboard sessions and the one-time values of sign-in and login, in Firestore.

    `burla dashboard` ─► sign-in code (2 min, once) ─► GET /signin ─► session cookie (12 h)
    admin's "add user" ─► sign-in code (7 days, once) ─┘
    `burla login` ─► state + challenge ─► "Authorize" (session, CSRF) ─► login code (5 min, once)
                 ─► exchange(code, state, verifier) ─► user token

Every value a browser or a CLI holds is stored only as its SHA-256 (schema.token_hash); spending
a one-time value creates used_codes/{hash}, and Firestore's `create` fails if it exists, so a
replayed link, state or code is refused even when two requests race. Blocking calls: the
service runs them in threads.

`session_authenticator` lets the dashboard's own requests in by their cookie, and refuses a
state-changing one (POST, PUT, PATCH, DELETE) whose X-Burla-CSRF header is not the session's.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass
from typing import Any, Callable

from aiohttp import web

from .. import schema
from .auth import Caller, bearer
from .responses import ApiFailure

COOKIE = "burla_session"
CSRF_HEADER = "X-Burla-CSRF"
SESSION_KIND = "session"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
_CODE_ALPHABET = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"  # no 0/O, 1/I: codes are read and typed


def new_code(groups: int = 4) -> str:
    """A one-time code people can type: 4 groups of 4 (80 bits)."""
    return "-".join("".join(secrets.choice(_CODE_ALPHABET) for _ in range(4)) for _ in range(groups))


def normalize_code(code: str) -> str:
    return "".join(c for c in code.upper() if c in _CODE_ALPHABET)


def challenge_of(verifier: str) -> str:
    """PKCE's S256: base64url(sha256(verifier)) without padding."""
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


@dataclass(frozen=True)
class LoginCode:
    email: str
    admin: bool
    state_hash: str
    challenge: str
    machine: str
    expires_at: float


class LoginStore:
    """The Firestore side of sign-in and login; `client` is a google.cloud.firestore.Client."""

    def __init__(self, client: Any) -> None:
        self.client = client

    def _doc(self, collection: str, value: str):
        return self.client.collection(collection).document(schema.token_hash(value))

    def spend(self, value: str) -> bool:
        """Mark a one-time value used; False if it already was (a replay)."""
        from google.api_core import exceptions

        try:
            self._doc(schema.USED_CODES, value).create({"used_at": time.time()})
        except exceptions.Conflict:
            return False
        return True

    # --- sessions ------------------------------------------------------------------------------

    def new_session(self, email: str, admin: bool) -> tuple[str, schema.Session]:
        cookie = secrets.token_urlsafe(32)
        session = schema.Session(email=email, admin=admin, csrf=secrets.token_urlsafe(24),
                                 expires_at=time.time() + schema.SESSION_SECONDS)
        self._doc(schema.SESSIONS, cookie).set(session.to_document())
        return cookie, session

    def session(self, cookie: str) -> schema.Session | None:
        snapshot = self._doc(schema.SESSIONS, cookie).get()
        if not snapshot.exists:
            return None
        session = schema.Session.from_document(snapshot.to_dict())
        return session if session.valid() else None

    def end_session(self, cookie: str) -> None:
        self._doc(schema.SESSIONS, cookie).delete()

    def end_sessions_of(self, email: str) -> int:
        ended = 0
        for snapshot in self.client.collection(schema.SESSIONS).where("email", "==", email).stream():
            snapshot.reference.delete()
            ended += 1
        return ended

    # --- sign-in codes -------------------------------------------------------------------------

    def new_signin_code(self, email: str, admin: bool, lifetime_s: float) -> str:
        code = new_code()
        self._doc(schema.SIGNIN_CODES, normalize_code(code)).set(
            {"email": email, "admin": admin, "expires_at": time.time() + lifetime_s})
        return code

    def spend_signin_code(self, code: str) -> tuple[str, bool] | None:
        """(email, admin) of a valid, unused sign-in code, which is then spent; else None."""
        key = normalize_code(code)
        if not key:
            return None
        snapshot = self._doc(schema.SIGNIN_CODES, key).get()
        if not snapshot.exists:
            return None
        data = snapshot.to_dict()
        if data.get("expires_at", 0) < time.time() or not self.spend("signin:" + key):
            return None
        snapshot.reference.delete()
        return str(data["email"]), bool(data.get("admin"))

    # --- login ---------------------------------------------------------------------------------

    def answered(self, state: str) -> bool:
        return self._doc(schema.LOGIN_REQUESTS, state).get().exists

    def answer(self, state: str, email: str, machine: str) -> bool:
        """Record that a login state was answered; False if it already was (a replay)."""
        from google.api_core import exceptions

        try:
            self._doc(schema.LOGIN_REQUESTS, state).create({"email": email, "machine": machine,
                                                           "answered_at": time.time()})
        except exceptions.Conflict:
            return False
        return True

    def new_login_code(self, email: str, admin: bool, state: str, challenge: str, machine: str) -> str:
        code = new_code()
        self._doc(schema.LOGIN_CODES, normalize_code(code)).set(
            {"email": email, "admin": admin, "state_hash": schema.token_hash(state), "challenge": challenge,
             "machine": machine, "expires_at": time.time() + schema.LOGIN_CODE_SECONDS})
        return code

    def login_code(self, code: str) -> LoginCode | None:
        key = normalize_code(code)
        if not key:
            return None
        snapshot = self._doc(schema.LOGIN_CODES, key).get()
        if not snapshot.exists:
            return None
        data = snapshot.to_dict()
        record = LoginCode(str(data["email"]), bool(data.get("admin")), str(data["state_hash"]),
                           str(data["challenge"]), str(data.get("machine") or ""), float(data["expires_at"]))
        return record if record.expires_at >= time.time() else None

    def spend_login_code(self, code: str) -> bool:
        key = normalize_code(code)
        spent = self.spend("login:" + key)
        if spent:
            self._doc(schema.LOGIN_CODES, key).delete()
        return spent


def same_secret(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode(), b.encode())


def cookie_of(request: web.Request) -> str | None:
    return request.cookies.get(COOKIE) or None


def is_https(request: web.Request) -> bool:
    """Cloud Run's front end ends TLS and says so in X-Forwarded-Proto."""
    return request.secure or request.headers.get("X-Forwarded-Proto", "").split(",")[0].strip() == "https"


def set_session_cookie(response: web.StreamResponse, request: web.Request, cookie: str) -> None:
    response.set_cookie(COOKIE, cookie, max_age=int(schema.SESSION_SECONDS), path="/", httponly=True,
                        secure=is_https(request), samesite="Lax")


def clear_session_cookie(response: web.StreamResponse, request: web.Request) -> None:
    response.del_cookie(COOKIE, path="/", secure=is_https(request), httponly=True, samesite="Lax")


async def current_session(request: web.Request, store: LoginStore) -> tuple[str, schema.Session] | None:
    cookie = cookie_of(request)
    if not cookie:
        return None
    session = await asyncio.to_thread(store.session, cookie)
    return (cookie, session) if session is not None else None


def session_authenticator(store_of: Callable[[web.Request], LoginStore]):
    """The dashboard's requests: a valid session cookie (and, to change anything, its CSRF token).
    Requests carrying a bearer token are the other authenticators'."""

    async def authenticate(request: web.Request) -> Caller | None:
        if bearer(request) is not None:
            return None
        found = await current_session(request, store_of(request))
        if found is None:
            return None
        _, session = found
        if request.method not in SAFE_METHODS and not same_secret(request.headers.get(CSRF_HEADER, ""), session.csrf):
            raise ApiFailure(403, "csrf", f"refused: a dashboard request that changes something must carry its "
                                          f"{CSRF_HEADER} header (cross-site request?)")
        return Caller(email=session.email, admin=session.admin, kind=SESSION_KIND)

    return authenticate

