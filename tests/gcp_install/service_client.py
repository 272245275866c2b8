"""Raw HTTP to a deployed cluster service, for tests that must see what a browser or an attacker
sends and gets (redirects are not followed, cookies are headers), plus the shortest honest ways
to a session and a token: the same requests `burla dashboard` and `burla login` make."""

from __future__ import annotations

import http.client
import json
import re
from dataclasses import dataclass
from http.cookies import SimpleCookie
from urllib.parse import parse_qs, urlencode, urlsplit

from burla_backend_gcp.login import _challenge


@dataclass
class Answer:
    status: int
    headers: http.client.HTTPMessage
    body: bytes

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")

    def json(self) -> dict:
        return json.loads(self.body)

    @property
    def location(self) -> str:
        return self.headers.get("Location", "")


def call(method: str, url: str, *, headers: dict[str, str] | None = None, body: bytes | dict | None = None,
         form: dict[str, str] | None = None, cookie: str | None = None) -> Answer:
    parts = urlsplit(url)
    sent = dict(headers or {})
    data = None
    if form is not None:
        data = urlencode(form).encode()
        sent["Content-Type"] = "application/x-www-form-urlencoded"
    elif isinstance(body, dict):
        data = json.dumps(body).encode()
        sent["Content-Type"] = "application/json"
    elif body is not None:
        data = body
    if cookie is not None:
        sent["Cookie"] = f"burla_session={cookie}"
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
    try:
        connection.request(method, parts.path + (f"?{parts.query}" if parts.query else ""), body=data, headers=sent)
        response = connection.getresponse()
        return Answer(response.status, response.headers, response.read())
    finally:
        connection.close()


def admin_headers(standin) -> dict[str, str]:
    """An administrator's Google credentials, as `burla dashboard` sends them."""
    return {"Authorization": f"Bearer {standin.mint_token()}", "X-Burla-Credential": "google",
            "X-Burla-Admin-Email": "owner@example.com"}


def signin_code(url: str, headers: dict[str, str]) -> str:
    answer = call("POST", url + "/v1/signin-links", headers=headers, body={})
    assert answer.status == 200, answer.text
    return answer.json()["code"]


def session_cookie(answer: Answer) -> SimpleCookie:
    jar = SimpleCookie()
    for value in answer.headers.get_all("Set-Cookie") or []:
        jar.load(value)
    return jar


def sign_in(url: str, headers: dict[str, str], extra: dict[str, str] | None = None) -> tuple[str, Answer]:
    """(the session cookie, the /signin answer) for whoever `headers` prove to be."""
    answer = call("GET", f"{url}/signin?code={signin_code(url, headers)}", headers=extra)
    assert answer.status == 303, answer.text
    return session_cookie(answer)["burla_session"].value, answer


def csrf_of(url: str, cookie: str) -> str:
    page = call("GET", url + "/authorize?" + urlencode(login_query("x" * 43, port="4000")), cookie=cookie)
    return re.search(r'name="burla-csrf" content="([^"]+)"', page.text).group(1)


def login_query(state: str, *, verifier: str = "v" * 50, port: str | None = None, machine: str = "tests@ci") -> dict:
    query = {"state": state, "challenge": _challenge(verifier), "machine": machine}
    query.update({"port": port} if port else {"mode": "code"})
    return query


def authorize(url: str, cookie: str, state: str, *, verifier: str = "v" * 50, port: str | None = "4000",
              csrf: str | None = None, origin: str | None = "same") -> Answer:
    """Press "Authorize" for a login `state` as the browser would (the form's fields)."""
    form = login_query(state, verifier=verifier, port=port)
    form["mode"] = "" if port else "code"
    form["csrf"] = csrf if csrf is not None else csrf_of(url, cookie)
    headers = {"Origin": url if origin == "same" else origin} if origin else {}
    return call("POST", url + "/authorize", form=form, cookie=cookie, headers=headers)


def code_from(answer: Answer) -> str:
    query = parse_qs(urlsplit(answer.location).query)
    return query["code"][0]
