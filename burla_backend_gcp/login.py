"""`burla dashboard` and `burla login`: this computer's side of signing in, with the cluster as
the only party (service/login.py is the other side).

    burla dashboard ─► POST /v1/signin-links, proving who asks: this computer's burla token, else
                       the user's Google credentials (an admin's may read the cluster secret)
                    ─► opens CLUSTER/signin?code=… (once, 2 minutes): the browser gets a session

    burla login ─► listens on 127.0.0.1:PORT, makes a one-time state and a PKCE verifier
                ─► opens CLUSTER/authorize?state&challenge&machine&port ─► the user presses
                   "Authorize" ─► the browser is sent to 127.0.0.1:PORT/callback?state&code
                ─► the state must be ours (anything else is ignored) ─► exchange code + verifier
                   for a token ─► burla_credentials.json (0600), backend "gcp" the default
    burla login --no-browser ─► prints the URL (mode=code) ─► the page shows a code to paste here

Which cluster: --cluster-url, else $BURLA_GCP_CLUSTER_URL, else the saved credentials', else the
Cloud Run service `burla install` deployed in gcloud's project (needs the user's Google login).
"""

from __future__ import annotations

import base64
import getpass
import hashlib
import hmac
import html
import os
import re
import secrets
import socket
import threading
import time
import webbrowser
from dataclasses import dataclass
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable
from urllib.parse import parse_qs, urlencode, urlsplit

from burla_core import config

from . import credentials
from .errors import GcpCredentialsMissing, LoginError
from .service_http import ClusterRefused, post_json
from .settings import CLUSTER_URL_ENV

SIGN_IN_FIRST = "Sign in to the dashboard first: run `burla dashboard`, then `burla login` again."
Echo = Callable[[str], None]


# --- which cluster --------------------------------------------------------------------------------


def _clean_url(url: str, source: str) -> str:
    url = url.strip().rstrip("/")
    if not re.match(r"^https?://[^/\s]+$", url):
        raise LoginError(f"{source} must be the cluster's address, like https://burla-cluster-abc-uc.a.run.app "
                         f"(got {url!r})")
    return url


def find_cluster_url(explicit: str | None = None) -> str:
    if explicit:
        return _clean_url(explicit, "--cluster-url")
    if os.environ.get(CLUSTER_URL_ENV):
        return _clean_url(os.environ[CLUSTER_URL_ENV], CLUSTER_URL_ENV)
    saved = credentials.read()
    if saved is not None:
        return _clean_url(saved.cluster_url, str(credentials.credentials_path()))
    return _clean_url(_deployed_url(), "the Cloud Run service")


def _deployed_url() -> str:
    """The URL of the service `burla install` deployed in gcloud's project."""
    from google.api_core import exceptions

    from . import clients
    from .install.context import InstallPrerequisiteMissing, gcloud_project
    from .install.names import ClusterNames

    hint = "pass --cluster-url (the dashboard's address, which `burla install` printed)"
    try:
        project = gcloud_project()
        names = ClusterNames(project)
        return clients.run_services().get_service(name=names.service).uri
    except (InstallPrerequisiteMissing, GcpCredentialsMissing) as missing:
        raise LoginError(f"which cluster? {hint}. (Looking it up in gcloud's project failed: {missing})") from None
    except exceptions.NotFound:
        raise LoginError(f"no burla cluster in project {project} (run `burla install` there), or {hint}") from None
    except exceptions.GoogleAPICallError as error:
        raise LoginError(f"could not look up the cluster in project {project} ({error.message}); {hint}") from None


def _machine_label() -> str:
    try:
        user = getpass.getuser()
    except Exception:  # no user name in this environment (a container): the host alone will do
        user = ""
    label = f"{user}@{socket.gethostname()}" if user else socket.gethostname()
    return re.sub(r"[^\w .@:()+-]", "-", label)[:100]


def _when(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, tz=timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def _browser_opened(url: str) -> bool:
    try:
        return bool(webbrowser.open(url))
    except webbrowser.Error:
        return False


def _open(url: str, echo: Echo, open_browser: bool, what: str) -> None:
    if open_browser:
        opened = _browser_opened(url)
        echo(f"{what} in your browser{'' if opened else ' (none could be opened: open the link yourself)'}:")
    else:
        echo(f"{what}: open this link in a browser")
    echo(f"  {url}")


# --- burla dashboard ------------------------------------------------------------------------------


def _google_proof() -> tuple[str, str]:
    """The user's Google access token and email (for an admin's sign-in)."""
    from google.auth.transport.requests import Request

    from . import clients
    from .install.context import account_of

    google = clients.default_credentials()
    google.refresh(Request())
    return google.token, account_of(google)


def open_dashboard(*, cluster_url: str | None = None, open_browser: bool = True, echo: Echo = print) -> str:
    """Sign the browser in to the dashboard; the one-time sign-in URL."""
    url = find_cluster_url(cluster_url)
    saved = credentials.read()
    answer = None
    refusals = []
    if saved is not None and saved.cluster_url.rstrip("/") == url and saved.expires_at > time.time():
        try:
            answer = post_json(url + "/v1/signin-links", {}, token=saved.token)
        except ClusterRefused as refused:
            refusals.append(f"this computer's burla token: {refused.message}")
    if answer is None:
        try:
            token, email = _google_proof()
        except GcpCredentialsMissing:
            refusals.append("no Google credentials here (`gcloud auth application-default login`)")
        else:
            try:
                answer = post_json(url + "/v1/signin-links", {}, token=token,
                                   headers={"X-Burla-Credential": "google", "X-Burla-Admin-Email": email or "admin"})
            except ClusterRefused as refused:
                refusals.append(f"your Google credentials: {refused.message}")
    if answer is None:
        raise LoginError(f"{url} does not let you sign in ({'; '.join(refusals)}). An admin of the cluster can add "
                         f"you (Settings, Users) and send you an invitation link; project owners sign in with "
                         f"their Google login.")
    link = url + answer["path"]
    _open(link, echo, open_browser, f"Signing {answer.get('email', 'you')} in to the dashboard (the link works once, "
                                    f"within {answer.get('expires_in_s', 120):.0f} s)")
    return link


# --- burla login ----------------------------------------------------------------------------------


def _challenge(verifier: str) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()


@dataclass
class Callback:
    code: str = ""
    error: str = ""


class _Listener:
    """The one-shot HTTP server on 127.0.0.1 that the "Authorize" page sends the browser to."""

    def __init__(self, state: str) -> None:
        self.state = state
        self.answer: Callback | None = None
        self.arrived = threading.Event()
        listener = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format, *args):  # noqa: A002 - the base class's signature
                pass

            def do_GET(self):  # noqa: N802 - http.server's naming
                parts = urlsplit(self.path)
                query = {k: v[0] for k, v in parse_qs(parts.query).items()}
                if parts.path != "/callback" or not hmac.compare_digest(query.get("state", ""), listener.state):
                    # Not our login's answer (a stale tab, a forged link): ignored, still waiting.
                    self._reply(400, "Not this login", "This page does not belong to the <code>burla login</code> "
                                                       "that is waiting; nothing happened.")
                    return
                if listener.arrived.is_set():
                    self._reply(409, "Already answered", "This login was already answered.")
                    return
                if query.get("code"):
                    self._reply(200, "This machine is authorized",
                                "You can close this tab; <code>burla login</code> is finishing in your terminal.")
                    listener.answer = Callback(code=query["code"])
                else:
                    message = SIGN_IN_FIRST if query.get("error") == "signin_required" else (
                        f"The cluster refused this login ({query.get('error', 'no reason given')}).")
                    self._reply(401, "Not authorized", html.escape(message).replace("`burla dashboard`",
                                                                                    "<code>burla dashboard</code>"))
                    listener.answer = Callback(error=message)
                listener.arrived.set()

            def _reply(self, status: int, title: str, message: str) -> None:
                text = (f"<!doctype html><meta charset=utf-8><title>{html.escape(title)}</title>"
                        f"<body style='font-family:sans-serif;max-width:40em;margin:4em auto'><h1>{html.escape(title)}"
                        f"</h1><p>{message}</p></body>").encode()
                self.send_response(status)
                self.send_header("Content-Type", "text/html; charset=utf-8")
                self.send_header("Content-Length", str(len(text)))
                self.send_header("Cache-Control", "no-store")
                self.end_headers()
                self.wfile.write(text)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, args=(0.1,), name="burla-login", daemon=True).start()

    def wait(self, timeout_s: float) -> Callback | None:
        self.arrived.wait(timeout_s)
        return self.answer

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def login(*, cluster_url: str | None = None, open_browser: bool = True, timeout_s: float = 300.0, echo: Echo = print,
          prompt: Callable[[str], str] = input) -> credentials.SavedCredentials:
    """Authorize this computer on the cluster, save its token, make gcp the default backend."""
    url = find_cluster_url(cluster_url)
    state, verifier = secrets.token_urlsafe(32), secrets.token_urlsafe(48)
    query = {"state": state, "challenge": _challenge(verifier), "machine": _machine_label()}
    listener = _Listener(state) if open_browser else None
    if listener is not None:
        page = f"{url}/authorize?{urlencode({**query, 'port': listener.port})}"
        if not _browser_opened(page):
            # No browser here (SSH, a container): a browser elsewhere cannot reach this machine's
            # 127.0.0.1, so the page will show a code to paste instead.
            listener.close()
            listener = None
            echo("No browser could be opened on this machine.")
    if listener is not None:
        try:
            echo("Authorize this machine in your browser:")
            echo(f"  {page}")
            echo(f"Waiting up to {timeout_s:.0f} s for you to press Authorize (Ctrl-C to stop) ...")
            answer = listener.wait(timeout_s)
        finally:
            listener.close()
        if answer is None:
            raise LoginError(f"nobody pressed Authorize within {timeout_s:.0f} s. If the page said to sign in, run "
                             f"`burla dashboard` first; on a machine without a browser use `burla login --no-browser`.")
        if answer.error:
            raise LoginError(answer.error)
        code = answer.code
    else:
        page = f"{url}/authorize?{urlencode({**query, 'mode': 'code'})}"
        _open(page, echo, False, "Authorize this machine")
        echo("Press Authorize there, then paste the code it shows. (If it says to sign in first, run "
             "`burla dashboard` on a computer with a browser.)")
        code = prompt("Code").strip()
        if not code:
            raise LoginError("no code given; run `burla login --no-browser` again")
    try:
        answer = post_json(url + "/v1/login/exchange", {"code": code, "state": state, "verifier": verifier})
    except ClusterRefused as refused:
        raise LoginError(f"{url} refused the login: {refused.message}") from None
    saved = credentials.SavedCredentials(url, answer["token"], float(answer["expires_at"]), answer.get("project"))
    path = credentials.save(saved)
    config.write_config({"backend": "gcp"})
    echo(f"Logged in to {url} as {answer.get('email')}; the token is in {path} (valid until "
         f"{_when(saved.expires_at)}, refreshed before then). remote_parallel_map now runs on this cluster "
         f"(backend \"gcp\").")
    return saved

