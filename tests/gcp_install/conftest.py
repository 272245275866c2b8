"""Fixtures for `burla install`, `burla login` and the dashboard: a fresh stand-in project per
test (only the APIs Google enables in a new project, and Google's Firestore emulator), the
`burla` command run as a user would run it, and a headless Chromium."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

pytest.importorskip("google.cloud.compute_v1", reason="the gcp extra is not installed (pip install -e '.[test]')")

from burla_backend_gcp.install.service import SERVICE_IMAGE  # noqa: E402
from burla_backend_gcp.standin import StandIn  # noqa: E402
from burla_backend_gcp.standin.firestore import EmulatorNotFound, find_emulator  # noqa: E402

from ..conftest import python_env  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO / "test-artifacts"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"]
# The reads of a run (route names as the stand-in logs them); everything else changed something.
READS = (".get", ".list", ".getIamPolicy", ".testIamPermissions", ".wait", ".batchGet", ".aggregatedList", "oauth2.token")


def require_emulator() -> None:
    try:
        find_emulator()
    except EmulatorNotFound as missing:
        pytest.skip(f"no Firestore emulator here ({missing}); scripts/install-firestore-emulator installs one")


@pytest.fixture
def project(monkeypatch, tmp_path):
    """A new, empty project in a stand-in: as on Google, only Service Usage, Resource Manager and
    Storage are enabled. Its Cloud Run plays the service's image with this Python."""
    require_emulator()
    with StandIn(enabled_services=(), firestore=True, run_images={SERVICE_IMAGE: ["python"]}, stop_grace_s=1.0,
                 root=tmp_path / "standin") as standin:
        monkeypatch.setenv("FIRESTORE_EMULATOR_HOST", standin.firestore_emulator.host)
        yield standin


def changes(standin: StandIn, since: int = 0) -> list[str]:
    """The requests since `since` that changed something (not reads), as 'route status'."""
    return [f"{r.route} {r.status}" for r in standin.requests[since:]
            if r.route and not r.route.endswith(READS)]


def burla_env(standin: StandIn, member: str | None = None, tmp_path: Path | None = None, **extra: str) -> dict:
    """The environment of a `burla` command run by `member` on a workstation: gcloud's project
    is the stand-in's, application-default credentials come from the stand-in's metadata server."""
    env = python_env()
    env.update(standin.environment(member))
    env.pop("NO_GCE_CHECK", None)
    gcloud_config = (tmp_path or Path(standin.root)) / "gcloud-config"
    gcloud_config.mkdir(exist_ok=True)
    env.update({"CLOUDSDK_CONFIG": str(gcloud_config), "CLOUDSDK_CORE_PROJECT": standin.project_id,
                "CLOUDSDK_CORE_DISABLE_PROMPTS": "1", "CLOUDSDK_CORE_DISABLE_USAGE_REPORTING": "true",
                "CLOUDSDK_COMPONENT_MANAGER_DISABLE_UPDATE_CHECK": "true"})
    env.update(extra)
    return env


def burla(*args: str, env: dict, timeout_s: float = 240.0, input_text: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "burla_cli", *args], env=env, capture_output=True, text=True,
                          timeout=timeout_s, input=input_text, cwd=REPO)


@pytest.fixture(scope="package")
def chromium():
    """A headless Chromium driven by Playwright: Debian's package (scripts/install-browser).

    Package-scoped: Playwright's synchronous API keeps its event loop suspended in a greenlet
    between uses, and after the rest of the suite has run asyncio loops of its own on the same
    thread, closing it at the end of the session hung in Playwright's dispatcher (300 s)."""
    if not os.path.exists(CHROMIUM):
        pytest.skip(f"no chromium at {CHROMIUM}: run scripts/install-browser (as root, on Debian) to install it")
    playwright_api = pytest.importorskip("playwright.sync_api",
                                         reason="playwright is not installed (pip install -e '.[test]')")
    with playwright_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def screenshots():
    """Where the browser tests save their screenshots (a build artifact, git-ignored)."""
    folder = ARTIFACTS / "screenshots"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@dataclass
class Installed:
    """A project with burla installed: the stand-in, the cluster's URL, and its Firestore."""

    standin: StandIn
    url: str

    def firestore(self):
        from burla_backend_gcp import clients, schema

        return clients.firestore(self.standin.project_id, schema.DATABASE, endpoint=self.standin.url)


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """`burla install` done once for a test module (in this process, as the project's owner)."""
    from burla_backend_gcp.install import install, make_context

    require_emulator()
    patch = pytest.MonkeyPatch()
    with StandIn(firestore=True, run_images={SERVICE_IMAGE: ["python"]}, stop_grace_s=1.0,
                 root=tmp_path_factory.mktemp("standin")) as standin:
        patch.setenv("FIRESTORE_EMULATOR_HOST", standin.firestore_emulator.host)
        try:
            ctx = make_context(project=standin.project_id, endpoint=standin.url, credentials=standin.credentials(),
                               account="owner@example.com", echo=lambda line: None)
            yield Installed(standin, install(ctx).cluster_url)
        finally:
            patch.undo()
