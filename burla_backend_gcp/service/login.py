"""Sign-in and login routes of the cluster service, with no third-party service: the cluster
itself is the identity provider, and Google's IAM or a burla token proves who may use it.

    POST /v1/signin-links     (an admin's Google credentials, or a user token) a one-time code;
                              `burla dashboard` opens CLUSTER/signin?code=CODE
    GET  /signin?code=        spends the code, sets the session cookie, goes to the dashboard
    POST /signout             (session, CSRF) ends the session
    GET  /authorize           "Authorize this machine" for `burla login`: ?state=S&challenge=C
                              &machine=M and port=P (it listens on 127.0.0.1:P) or mode=code
    POST /authorize           (session, CSRF, the state never answered before) makes a login code
                              and hands it to http://127.0.0.1:P/callback, or shows it to paste
    POST /v1/login/exchange   code + state + verifier (PKCE) ─► a user token, stored hashed
    POST /v1/tokens/refresh   (a user token) a new token for the same user; the old one is revoked

What is refused, and how: a replayed sign-in link, state or login code (used_codes, sessions.py);
a form posted from another site (CSRF token and Origin); any redirect but 127.0.0.1 on the
port the CLI gave (no open redirect: the target is built here, never taken from the request);
a code without its state and verifier; a user an admin has not added.
"""

from __future__ import annotations

import asyncio
import re
import time
from urllib.parse import urlencode

from aiohttp import web

from .. import schema
from .app import SETTINGS, STORE
from .auth import TOKEN_CACHE, caller_of, public
from .pages import esc, notice, page
from .responses import ApiFailure, bad_request, json_body
from .sessions import (LoginStore, challenge_of, clear_session_cookie, current_session, is_https, same_secret,
                       set_session_cookie)

LOGIN_STORE = web.AppKey("login_store", LoginStore)
routes = web.RouteTableDef()

_STATE = re.compile(r"^[A-Za-z0-9_-]{32,128}$")
_CHALLENGE = re.compile(r"^[A-Za-z0-9_-]{43}$")
_MACHINE = re.compile(r"^[\w .@:()+-]{0,100}$")
SIGN_IN_FIRST = "Sign in to the dashboard first: run <code>burla dashboard</code>, then <code>burla login</code> again."


def login_store(request: web.Request) -> LoginStore:
    return request.app[LOGIN_STORE]


def origin_of(request: web.Request) -> str:
    return f"{'https' if is_https(request) else 'http'}://{request.host}"


def _allowed(store, email: str, admin: bool) -> bool:
    return admin or store.user(email) is not None


# --- sign-in -------------------------------------------------------------------------------------


@routes.post("/v1/signin-links")
async def signin_link(request: web.Request) -> web.Response:
    caller = caller_of(request)
    if caller.kind not in (schema.TOKEN_KIND_USER, "google"):
        raise ApiFailure(403, "not_allowed", "sign-in links are for administrators and users with a burla token")
    code = await asyncio.to_thread(login_store(request).new_signin_code, caller.email, caller.admin,
                                   schema.SIGNIN_CODE_SECONDS)
    return web.json_response({"code": code, "path": "/signin?" + urlencode({"code": code}),
                              "expires_in_s": schema.SIGNIN_CODE_SECONDS, "email": caller.email})


@public
async def signin(request: web.Request) -> web.StreamResponse:
    code = request.query.get("code", "")
    spent = await asyncio.to_thread(login_store(request).spend_signin_code, code) if code else None
    if spent is None:
        return notice("This sign-in link does not work",
                      "<p>It is invalid, expired or was already used. Run <code>burla dashboard</code> for a new "
                      "one (an invitation from an admin lasts 7 days).</p>", status=400, kind="error")
    email, admin = spent
    admin = admin or await asyncio.to_thread(request.app[STORE].is_admin, email)
    cookie, _ = await asyncio.to_thread(login_store(request).new_session, email, admin)
    response = web.HTTPSeeOther("/")
    set_session_cookie(response, request, cookie)
    raise response


@public
async def signout(request: web.Request) -> web.StreamResponse:
    store = login_store(request)
    found = await current_session(request, store)
    form = await request.post()
    if found is not None:
        if not same_secret(str(form.get("csrf", "")), found[1].csrf):
            raise ApiFailure(403, "csrf", "refused: this sign-out did not come from the dashboard")
        await asyncio.to_thread(store.end_session, found[0])
    response = web.HTTPSeeOther("/signed-out")
    clear_session_cookie(response, request)
    raise response


@public
async def signed_out(request: web.Request) -> web.Response:
    return notice("Signed out", "<p>Run <code>burla dashboard</code> to sign in again.</p>")


# --- "Authorize this machine" --------------------------------------------------------------------


def _login_request(values) -> dict[str, str]:
    """The login request's fields, checked; a 400 page says what is wrong with them."""
    state, challenge = str(values.get("state", "")), str(values.get("challenge", ""))
    machine, mode, port = str(values.get("machine", "")), str(values.get("mode", "")), str(values.get("port", ""))
    problems = []
    if not _STATE.match(state):
        problems.append("state")
    if not _CHALLENGE.match(challenge):
        problems.append("challenge")
    if not _MACHINE.match(machine):
        problems.append("machine")
    if mode == "code":
        port = ""
    elif not (port.isdigit() and 1024 <= int(port) <= 65535):
        problems.append("port")
    if problems:
        raise web.HTTPBadRequest(text=f"burla login: this link is malformed ({', '.join(problems)}); run burla login "
                                      f"again", content_type="text/plain")
    return {"state": state, "challenge": challenge, "machine": machine, "port": port}


def callback_url(port: str, **query: str) -> str:
    """The only place a login redirects to: the CLI's listener on this machine's loopback."""
    return f"http://127.0.0.1:{int(port)}/callback?{urlencode(query)}"


async def _session_or_refusal(request: web.Request, store, fields: dict):
    """(the dashboard session, None), or (None, the page saying to sign in first); a login
    waiting on this machine's loopback is sent back to its CLI with `signin_required` instead."""
    found = await current_session(request, store)
    if found is not None:
        return found[1], None
    if fields["port"]:
        raise web.HTTPSeeOther(callback_url(fields["port"], state=fields["state"], error="signin_required"))
    return None, notice("Sign in first", f"<p>{SIGN_IN_FIRST}</p>", status=401, kind="error")


@public
async def authorize_page(request: web.Request) -> web.StreamResponse:
    fields = _login_request(request.query)
    store = login_store(request)
    session, refusal = await _session_or_refusal(request, store, fields)
    if session is None:
        return refusal
    if await asyncio.to_thread(store.answered, fields["state"]):
        return notice("Already answered", "<p>This login request was already answered. Run <code>burla login</code> "
                                          "again.</p>", status=409, session=session, kind="error")
    hidden = "".join(f'<input type="hidden" name="{name}" value="{esc(value)}">'
                     for name, value in (*fields.items(), ("mode", "" if fields["port"] else "code"),
                                         ("csrf", session.csrf)))
    machine = esc(fields["machine"] or "a computer")
    body = (f'<section class="authorize"><h1>Authorize this machine</h1>'
            f'<p><strong>{machine}</strong> asks to run jobs on this cluster as <strong>{esc(session.email)}</strong>.'
            f'</p><p>Only authorize a <code>burla login</code> you started yourself, just now.</p>'
            f'<form method="post" action="/authorize">{hidden}'
            f'<button type="submit" id="authorize" class="primary">Authorize</button></form></section>')
    return page("Authorize this machine", body, session=session)


@public
async def authorize(request: web.Request) -> web.StreamResponse:
    form = await request.post()
    fields = _login_request(form)
    store = login_store(request)
    session, refusal = await _session_or_refusal(request, store, fields)
    if session is None:
        return refusal
    origin = request.headers.get("Origin")
    if not same_secret(str(form.get("csrf", "")), session.csrf) or (origin and origin != origin_of(request)):
        return notice("Refused", "<p>This authorization did not come from this dashboard's own page (a cross-site "
                                 "request), so nothing was authorized.</p>", status=403, session=session, kind="error")
    if not await asyncio.to_thread(_allowed, request.app[STORE], session.email, session.admin):
        return notice("Not allowed", f"<p>{esc(session.email)} is not a user of this cluster: ask an admin to add "
                                     f"you in Settings.</p>", status=403, session=session, kind="error")
    if not await asyncio.to_thread(store.answer, fields["state"], session.email, fields["machine"]):
        return notice("Already answered", "<p>This login request was already answered (a replay), so it was refused. "
                                          "Run <code>burla login</code> again.</p>", status=409, session=session,
                      kind="error")
    code = await asyncio.to_thread(store.new_login_code, session.email, session.admin, fields["state"],
                                   fields["challenge"], fields["machine"])
    if fields["port"]:
        raise web.HTTPSeeOther(callback_url(fields["port"], state=fields["state"], code=code))
    return notice("Authorized", f'<p>Paste this code into <code>burla login</code>:</p>'
                                f'<p class="code" id="login-code">{esc(code)}</p>'
                                f'<p>It works once, within {schema.LOGIN_CODE_SECONDS / 60:.0f} minutes.</p>',
                  session=session)


# --- tokens --------------------------------------------------------------------------------------


@public
async def exchange(request: web.Request) -> web.Response:
    body = await json_body(request)
    code, state, verifier = (str(body.get(key) or "") for key in ("code", "state", "verifier"))
    if not (code and _STATE.match(state) and 43 <= len(verifier) <= 128):
        raise bad_request("give the code, the state and the verifier of this login")
    store = login_store(request)
    record = await asyncio.to_thread(store.login_code, code)
    if record is None:
        raise ApiFailure(400, "invalid_code", "that code is unknown, expired or already used; run `burla login` again")
    if not (same_secret(record.state_hash, schema.token_hash(state)) and same_secret(record.challenge,
                                                                                    challenge_of(verifier))):
        raise ApiFailure(400, "code_mismatch", "that code belongs to another `burla login`; run `burla login` again")
    if not await asyncio.to_thread(store.spend_login_code, code):
        raise ApiFailure(400, "invalid_code", "that code was already used; run `burla login` again")
    token, expires_at = await _issue(request, record.email, record.machine)
    return web.json_response({"token": token, "expires_at": expires_at, "email": record.email,
                              "project": request.app[SETTINGS].project})


@routes.post("/v1/tokens/refresh")
async def refresh(request: web.Request) -> web.Response:
    caller = caller_of(request)
    if caller.kind != schema.TOKEN_KIND_USER:
        raise ApiFailure(403, "not_a_user_token", "only a user token from `burla login` can be refreshed")
    old = request.headers["Authorization"].split(" ", 1)[1].strip()
    previous = await asyncio.to_thread(request.app[STORE].token, old)
    token, expires_at = await _issue(request, caller.email, previous.label if previous else "")
    await asyncio.to_thread(request.app[STORE].revoke_token, old)
    request.app[TOKEN_CACHE].forget_token(old)
    return web.json_response({"token": token, "expires_at": expires_at, "email": caller.email})


async def _issue(request: web.Request, email: str, label: str) -> tuple[str, float]:
    token = schema.new_token()
    record = schema.UserToken(email=email, expires_at=time.time() + schema.USER_TOKEN_SECONDS, label=label)
    await asyncio.to_thread(request.app[STORE].add_token, token, record)
    return token, record.expires_at


def setup(app: web.Application) -> None:
    """Add sign-in and login to the service: its routes, and sessions as a way in."""
    from .auth import AUTHENTICATORS
    from .sessions import session_authenticator

    async def start(app: web.Application) -> None:
        if LOGIN_STORE not in app:
            app[LOGIN_STORE] = LoginStore(app[STORE].client)

    app.on_startup.append(start)
    app[AUTHENTICATORS].append(session_authenticator(login_store))
    app.router.add_get("/signin", signin)
    app.router.add_post("/signout", signout)
    app.router.add_get("/signed-out", signed_out)
    app.router.add_get("/authorize", authorize_page)
    app.router.add_post("/authorize", authorize)
    app.router.add_post("/v1/login/exchange", exchange)
    app.router.add_routes(routes)
