"""What the cluster service's sign-in and login refuse, over real HTTP to the service `burla
install` deployed: replayed links, states and codes; cross-site forms; redirects anywhere but the
CLI's 127.0.0.1 port; forged cookies; tokens that are expired, revoked or another cluster's."""

from __future__ import annotations

import secrets
import time
from urllib.parse import urlencode

from burla_backend_gcp import schema
from burla_backend_gcp.service.sessions import LoginStore

from .service_client import (admin_headers, authorize, call, code_from, csrf_of, login_query, session_cookie,
                             sign_in, signin_code)


def new_state() -> str:
    return secrets.token_urlsafe(32)


def test_a_signin_link_works_once_and_sets_a_strict_session_cookie(installed):
    url = installed.url
    code = signin_code(url, admin_headers(installed.standin))
    first = call("GET", f"{url}/signin?code={code}")
    assert first.status == 303 and first.location == "/"
    cookie = session_cookie(first)["burla_session"]
    assert cookie["httponly"] and cookie["samesite"] == "Lax" and cookie["path"] == "/"
    assert int(cookie["max-age"]) == int(schema.SESSION_SECONDS) and not cookie["secure"]
    assert call("GET", url + "/v1/cluster", cookie=cookie.value).status == 200

    replay = call("GET", f"{url}/signin?code={code}")
    assert replay.status == 400 and "already used" in replay.text and not replay.headers.get_all("Set-Cookie")

    # Behind Cloud Run's HTTPS front end the cookie is Secure.
    _, secure = sign_in(url, admin_headers(installed.standin), extra={"X-Forwarded-Proto": "https"})
    assert session_cookie(secure)["burla_session"]["secure"]


def test_an_expired_or_made_up_signin_link_and_a_forged_cookie_are_refused(installed):
    url = installed.url
    store = LoginStore(installed.firestore())
    expired = store.new_signin_code("owner@example.com", True, lifetime_s=-1)
    assert call("GET", f"{url}/signin?code={expired}").status == 400
    assert call("GET", f"{url}/signin?code=AAAA-BBBB-CCCC-DDDD").status == 400
    forged = call("GET", url + "/v1/cluster", cookie=secrets.token_urlsafe(32))
    assert forged.status == 401 and forged.json()["error"] == "unauthenticated"


def test_only_admins_and_token_holders_get_a_signin_link(installed):
    url = installed.url
    stranger = {"Authorization": f"Bearer {installed.standin.mint_token('user:eve@example.com')}",
                "X-Burla-Credential": "google", "X-Burla-Admin-Email": "eve@example.com"}
    refused = call("POST", url + "/v1/signin-links", headers=stranger, body={})
    assert refused.status == 403 and refused.json()["error"] == "not_an_admin"
    assert call("POST", url + "/v1/signin-links", body={}).status == 401


def test_a_dashboard_request_without_its_csrf_token_changes_nothing(installed):
    url = installed.url
    cookie, _ = sign_in(url, admin_headers(installed.standin))
    refused = call("POST", url + "/v1/tokens", body={"email": "mallory@example.com"}, cookie=cookie)
    assert refused.status == 403 and refused.json()["error"] == "csrf"
    allowed = call("POST", url + "/v1/tokens", body={"email": "bob@example.com"}, cookie=cookie,
                   headers={"X-Burla-CSRF": csrf_of(url, cookie)})
    assert allowed.status == 200 and allowed.json()["token"].startswith(schema.TOKEN_PREFIX)


def test_authorize_hands_a_one_time_code_to_the_cli_port_only_and_refuses_a_replayed_state(installed):
    url = installed.url
    cookie, _ = sign_in(url, admin_headers(installed.standin))
    state = new_state()
    page = call("GET", url + "/authorize?" + urlencode(login_query(state, port="4000")), cookie=cookie)
    assert page.status == 200 and "Authorize this machine" in page.text and "tests@ci" in page.text
    assert page.headers["X-Frame-Options"] == "DENY" and "frame-ancestors 'none'" in page.headers["Content-Security-Policy"]

    answered = authorize(url, cookie, state, port="4000")
    assert answered.status == 303
    assert answered.location.startswith(f"http://127.0.0.1:4000/callback?state={state}&code=")

    replay = authorize(url, cookie, state, port="4000")
    assert replay.status == 409 and "replay" in replay.text
    again = call("GET", url + "/authorize?" + urlencode(login_query(state, port="4000")), cookie=cookie)
    assert again.status == 409 and "already answered" in again.text


def test_authorize_never_redirects_elsewhere(installed):
    url = installed.url
    cookie, _ = sign_in(url, admin_headers(installed.standin))
    for port in ("80", "70000", "4000@evil.example", "4000/../evil", "evil.example"):
        query = {**login_query(new_state(), port="4000"), "port": port}
        answer = call("GET", url + "/authorize?" + urlencode(query), cookie=cookie)
        assert answer.status == 400 and not answer.location, (port, answer.status, answer.location)
    state = new_state()
    query = {**login_query(state, port="4001"), "redirect_uri": "https://evil.example/", "next": "//evil.example"}
    answer = call("GET", url + "/authorize?" + urlencode(query), cookie=cookie)
    assert answer.status == 200 and "evil.example" not in answer.text
    answered = authorize(url, cookie, state, port="4001")
    assert answered.location.startswith("http://127.0.0.1:4001/callback?")


def test_a_cross_site_authorize_is_refused(installed):
    url = installed.url
    cookie, _ = sign_in(url, admin_headers(installed.standin))
    wrong_csrf = authorize(url, cookie, new_state(), csrf="not-the-token")
    assert wrong_csrf.status == 403 and "cross-site" in wrong_csrf.text and not wrong_csrf.location
    other_site = authorize(url, cookie, new_state(), origin="https://evil.example")
    assert other_site.status == 403 and not other_site.location


def test_without_a_session_authorize_says_to_sign_in_first(installed):
    url = installed.url
    state = new_state()
    local = call("GET", url + "/authorize?" + urlencode(login_query(state, port="4002")))
    assert local.status == 303 and local.location == f"http://127.0.0.1:4002/callback?state={state}&error=signin_required"
    pasted = call("GET", url + "/authorize?" + urlencode(login_query(new_state())))
    assert pasted.status == 401 and "burla dashboard" in pasted.text
    posted = authorize(url, secrets.token_urlsafe(32), new_state(), port="4002", csrf="x")
    assert posted.status == 303 and "error=signin_required" in posted.location


def test_a_login_code_gives_a_token_once_and_only_with_its_state_and_verifier(installed):
    url = installed.url
    cookie, _ = sign_in(url, admin_headers(installed.standin))
    state, verifier = new_state(), secrets.token_urlsafe(48)
    code = code_from(authorize(url, cookie, state, verifier=verifier))

    wrong_verifier = call("POST", url + "/v1/login/exchange", body={"code": code, "state": state,
                                                                   "verifier": secrets.token_urlsafe(48)})
    assert wrong_verifier.status == 400 and wrong_verifier.json()["error"] == "code_mismatch"
    wrong_state = call("POST", url + "/v1/login/exchange", body={"code": code, "state": new_state(), "verifier": verifier})
    assert wrong_state.status == 400 and wrong_state.json()["error"] == "code_mismatch"

    exchanged = call("POST", url + "/v1/login/exchange", body={"code": code, "state": state, "verifier": verifier})
    assert exchanged.status == 200, exchanged.text
    token = exchanged.json()["token"]
    assert exchanged.json()["email"] == "owner@example.com"
    assert exchanged.json()["expires_at"] > time.time() + schema.USER_TOKEN_SECONDS - 60
    stored = installed.firestore().collection(schema.USER_TOKENS).document(schema.token_hash(token)).get()
    assert stored.exists and token not in str(stored.to_dict()), "the token must be stored hashed"
    assert call("GET", url + "/v1/cluster", headers={"Authorization": f"Bearer {token}"}).status == 200

    replay = call("POST", url + "/v1/login/exchange", body={"code": code, "state": state, "verifier": verifier})
    assert replay.status == 400 and replay.json()["error"] == "invalid_code"


def test_a_pasted_code_login_shows_the_code_on_the_page(installed):
    url = installed.url
    cookie, _ = sign_in(url, admin_headers(installed.standin))
    state = new_state()
    shown = authorize(url, cookie, state, port=None)
    assert shown.status == 200 and 'id="login-code"' in shown.text and not shown.location
    code = shown.text.split('id="login-code">')[1].split("<")[0]
    exchanged = call("POST", url + "/v1/login/exchange", body={"code": code.lower(), "state": state, "verifier": "v" * 50})
    assert exchanged.status == 200, exchanged.text


def test_refresh_replaces_the_token_and_the_old_one_then_says_run_burla_login(installed):
    url = installed.url
    cookie, _ = sign_in(url, admin_headers(installed.standin))
    state = new_state()
    code = code_from(authorize(url, cookie, state))
    old = call("POST", url + "/v1/login/exchange", body={"code": code, "state": state, "verifier": "v" * 50}).json()["token"]

    refreshed = call("POST", url + "/v1/tokens/refresh", headers={"Authorization": f"Bearer {old}"}, body={})

    assert refreshed.status == 200, refreshed.text
    new = refreshed.json()["token"]
    assert new != old and call("GET", url + "/v1/cluster", headers={"Authorization": f"Bearer {new}"}).status == 200
    revoked = call("GET", url + "/v1/cluster", headers={"Authorization": f"Bearer {old}"})
    assert revoked.status == 401 and "run `burla login`" in revoked.json()["message"]


def test_expired_and_other_clusters_tokens_are_refused_with_run_burla_login(installed):
    url = installed.url
    expired = schema.new_token()
    installed.firestore().collection(schema.USER_TOKENS).document(schema.token_hash(expired)).set(
        schema.UserToken(email="owner@example.com", expires_at=time.time() - 5).to_document())
    for token, code in ((expired, "token_expired"), (schema.new_token(), "token_unknown")):
        answer = call("GET", url + "/v1/cluster", headers={"Authorization": f"Bearer {token}"})
        assert answer.status == 401 and answer.json()["error"] == code and "burla login" in answer.json()["message"]


def test_a_user_the_admins_removed_cannot_authorize_a_machine(installed):
    url = installed.url
    admin_cookie, _ = sign_in(url, admin_headers(installed.standin))
    issued = call("POST", url + "/v1/tokens", body={"email": "carol@example.com"}, cookie=admin_cookie,
                  headers={"X-Burla-CSRF": csrf_of(url, admin_cookie)}).json()["token"]
    carol, _ = sign_in(url, {"Authorization": f"Bearer {issued}"})
    refused = authorize(url, carol, new_state())
    assert refused.status == 403 and "ask an admin" in refused.text
