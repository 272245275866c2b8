"""`burla dashboard` and `burla login` as a user runs them, with headless Chromium as the browser:
the sign-in link, "Authorize this machine", the token handed to the CLI's 127.0.0.1 listener or
pasted, the credentials file (0600) and gcp as the default backend; and what happens without a
dashboard session. $BROWSER=true stands for "a browser opened"; the test's Chromium then visits
the URL the command printed, as the user would."""

from __future__ import annotations

import json
import os
import re
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from burla_backend_gcp import credentials, schema

from .conftest import REPO, burla, burla_env
from .service_client import call

pytestmark = pytest.mark.usefixtures("chromium")


@pytest.fixture
def user_env(installed, tmp_path):
    """The environment of `burla` on the user's computer: its own data dir and config file."""
    return burla_env(installed.standin, tmp_path=tmp_path, BROWSER="true", BURLA_DATA_DIR=str(tmp_path / "data"),
                     BURLA_CONFIG=str(tmp_path / "config.json"))


def printed_url(process: subprocess.Popen, pattern: str, timeout_s: float = 60.0) -> str:
    deadline = time.monotonic() + timeout_s
    seen = []
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            break
        seen.append(line)
        match = re.search(pattern, line)
        if match:
            return match.group(0)
    process.kill()
    raise AssertionError(f"the command printed no URL matching {pattern!r}: {''.join(seen)}{process.stderr.read()}")


def start(*args: str, env: dict) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "burla_cli", *args], env=env, stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO)


def signed_in_browser(chromium, installed, env):
    """A browser signed in to the dashboard the way `burla dashboard` does it."""
    signin = burla("dashboard", "--cluster-url", installed.url, env=env)
    assert signin.returncode == 0, signin.stdout + signin.stderr
    link = re.search(r"http://\S+/signin\?code=\S+", signin.stdout).group(0)
    context = chromium.new_context()
    page = context.new_page()
    page.goto(link)
    page.wait_for_selector("#cards")
    return context, page


def test_burla_dashboard_then_burla_login_authorizes_this_machine(installed, chromium, user_env, screenshots):
    context, page = signed_in_browser(chromium, installed, user_env)
    try:
        assert "owner@example.com (admin)" in page.inner_text("header")
        login = start("login", "--cluster-url", installed.url, env=user_env)
        authorize_url = printed_url(login, r"http://127\.0\.0\.1:\d+/authorize\?\S+")
        page.goto(authorize_url)
        assert "Authorize this machine" in page.inner_text("h1")
        page.screenshot(path=str(screenshots / "authorize.png"))
        page.click("#authorize")
        page.wait_for_selector("text=This machine is authorized")
        out, err = login.communicate(timeout=60)
    finally:
        context.close()
    assert login.returncode == 0, out + err
    assert "Logged in to" in out and "as owner@example.com" in out

    path = Path(user_env["BURLA_DATA_DIR"]) / "burla_credentials.json"
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    saved = json.loads(path.read_text())
    assert set(saved) == {"cluster_url", "token", "expires_at", "project"}
    assert saved["cluster_url"] == installed.url and saved["project"] == installed.standin.project_id
    assert call("GET", installed.url + "/v1/cluster", headers={"Authorization": f"Bearer {saved['token']}"}).status == 200
    assert json.loads(Path(user_env["BURLA_CONFIG"]).read_text())["backend"] == "gcp"

    # The saved token signs the browser in next time, with no Google credentials.
    no_google = dict(user_env)
    for key in ("GCE_METADATA_HOST", "GCE_METADATA_IP"):
        no_google.pop(key)
    no_google["NO_GCE_CHECK"] = "true"
    again = burla("dashboard", "--no-browser", env=no_google)
    assert again.returncode == 0 and "/signin?code=" in again.stdout, again.stdout + again.stderr


def test_burla_login_without_a_dashboard_session_says_to_sign_in_first(installed, chromium, user_env):
    login = start("login", "--cluster-url", installed.url, env=user_env)
    authorize_url = printed_url(login, r"http://127\.0\.0\.1:\d+/authorize\?\S+")
    context = chromium.new_context()
    try:
        page = context.new_page()
        page.goto(authorize_url)  # no session cookie in this browser
        assert "Sign in to the dashboard first" in page.inner_text("body") and "burla dashboard" in page.inner_text("body")
        out, err = login.communicate(timeout=60)
    finally:
        context.close()
    assert login.returncode == 1
    assert "Sign in to the dashboard first: run `burla dashboard`" in err
    assert not (Path(user_env["BURLA_DATA_DIR"]) / "burla_credentials.json").exists()


def test_burla_login_no_browser_takes_the_pasted_code(installed, chromium, user_env):
    context, page = signed_in_browser(chromium, installed, user_env)
    try:
        login = start("login", "--no-browser", "--cluster-url", installed.url, env=user_env)
        authorize_url = printed_url(login, r"http://127\.0\.0\.1:\d+/authorize\?\S+mode=code\S*")
        page.goto(authorize_url)
        page.click("#authorize")
        code = page.inner_text("#login-code")
        out, err = login.communicate(input=code + "\n", timeout=60)
    finally:
        context.close()
    assert login.returncode == 0, out + err
    saved = credentials.read(Path(user_env["BURLA_DATA_DIR"]) / "burla_credentials.json")
    assert saved is not None and saved.token.startswith(schema.TOKEN_PREFIX)


def test_burla_dashboard_refuses_someone_the_cluster_does_not_know(installed, tmp_path):
    env = burla_env(installed.standin, "user:eve@example.com", tmp_path, BURLA_DATA_DIR=str(tmp_path / "data"))
    refused = burla("dashboard", "--no-browser", "--cluster-url", installed.url, env=env)
    assert refused.returncode == 1
    assert "does not let you sign in" in refused.stderr and "cluster secret" in refused.stderr, refused.stderr


def test_a_token_near_its_expiry_is_refreshed_and_a_revoked_one_says_run_burla_login(installed, tmp_path, monkeypatch):
    from burla_core.errors import UnauthorizedError

    monkeypatch.setenv("BURLA_DATA_DIR", str(tmp_path / "data"))
    from .service_client import admin_headers

    old = call("POST", installed.url + "/v1/tokens", headers=admin_headers(installed.standin),
               body={"email": "owner@example.com"}).json()["token"]
    credentials.save(credentials.SavedCredentials(installed.url, old, time.time() + 3600, installed.standin.project_id))

    fresh = credentials.refresh_if_due()

    assert fresh.token != old and fresh.expires_at > time.time() + schema.USER_TOKEN_SECONDS - 60
    assert credentials.read().token == fresh.token
    assert credentials.refresh_if_due().token == fresh.token, "a fresh token is not refreshed again"
    credentials.save(credentials.SavedCredentials(installed.url, old, time.time() + 3600))
    with pytest.raises(UnauthorizedError, match="run `burla login`"):
        credentials.refresh_if_due()


def test_burla_login_where_no_browser_opens_falls_back_to_a_code(installed, chromium, user_env):
    context, page = signed_in_browser(chromium, installed, user_env)
    try:
        no_browser_here = {**user_env, "BROWSER": "false"}  # the browser command fails, as over SSH
        login = start("login", "--cluster-url", installed.url, env=no_browser_here)
        authorize_url = printed_url(login, r"http://127\.0\.0\.1:\d+/authorize\?\S+")
        assert "mode=code" in authorize_url and "port=" not in authorize_url, authorize_url
        page.goto(authorize_url)
        page.click("#authorize")
        out, err = login.communicate(input=page.inner_text("#login-code") + "\n", timeout=60)
    finally:
        context.close()
    assert login.returncode == 0, out + err
