"""From nothing to a working cluster, as a user goes: a fresh project in the GCP stand-in →
`burla install` → the cluster service started the way the stand-in's Cloud Run "deploys" it →
`burla dashboard` and `burla login` in headless Chromium → `remote_parallel_map(..., grow=True)`
in a program of the user's, whose job then shows on the dashboard with its output → a second job
stopped with the dashboard's Stop button. Screenshots of every page go to test-artifacts/.

`pytest -k "e2e and login"` selects it."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from burla_backend_gcp.install.service import SERVICE_IMAGE
from burla_backend_gcp.standin import StandIn

from .conftest import REPO, burla, burla_env, require_emulator
from .test_login_browser import printed_url, start

GROWN_JOB = textwrap.dedent("""
    from burla import remote_parallel_map

    def square(x):
        print(f"squaring {x}")
        return x * x

    print("RESULTS", remote_parallel_map(square, list(range(12)), func_ram=1, grow=True, spinner=False))
""")
LONG_JOB = textwrap.dedent("""
    import time
    from burla import remote_parallel_map
    from burla_core.errors import JobCanceled

    def slow(x):
        time.sleep(1)
        return x

    try:
        remote_parallel_map(slow, list(range(400)), func_ram=1, grow=True, spinner=False)
    except JobCanceled as stopped:
        print("STOPPED", stopped)
""")


def expect(locator):
    from playwright.sync_api import expect as playwright_expect

    return playwright_expect(locator)


def run_program(source: str, env: dict, tmp_path: Path, name: str) -> subprocess.Popen:
    script = tmp_path / f"{name}.py"
    script.write_text(source)
    return subprocess.Popen([sys.executable, str(script)], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, cwd=tmp_path)


def test_e2e_install_dashboard_login_then_a_grown_job_shows_and_stop_cancels_another(chromium, tmp_path, screenshots):
    require_emulator()
    with StandIn(enabled_services=(), firestore=True, run_images={SERVICE_IMAGE: ["python"]}, boot_delay_s=0.2,
                 stop_grace_s=1.0, root=tmp_path / "standin") as standin:
        env = burla_env(standin, tmp_path=tmp_path, BROWSER="true", BURLA_DATA_DIR=str(tmp_path / "data"),
                        BURLA_CONFIG=str(tmp_path / "config.json"))

        installed = burla("install", env=env, timeout_s=300)
        assert installed.returncode == 0, installed.stdout + installed.stderr
        url = re.search(r"dashboard: (http://127\.0\.0\.1:\d+)", installed.stdout).group(1)
        service_log = next((tmp_path / "standin" / "run").glob("burla-cluster-*/*.log"))
        assert "running burla_backend_gcp.service from" in service_log.read_text(), "the service runs its archive"

        # Sign in to the dashboard, then authorize this machine.
        signin = burla("dashboard", env=env)
        assert signin.returncode == 0, signin.stdout + signin.stderr
        context = chromium.new_context(viewport={"width": 1280, "height": 900})
        page = context.new_page()
        try:
            page.goto(re.search(r"http://\S+/signin\?code=\S+", signin.stdout).group(0))
            expect(page.locator("header")).to_contain_text("owner@example.com")
            login = start("login", env=env)
            page.goto(printed_url(login, r"http://127\.0\.0\.1:\d+/authorize\?\S+"))
            page.screenshot(path=str(screenshots / "e2e-authorize.png"))
            page.click("#authorize")
            out, err = login.communicate(timeout=120)
            assert login.returncode == 0, out + err
            assert json.loads((tmp_path / "config.json").read_text())["backend"] == "gcp"

            # Settings: a small machine family for this 2-core test machine, and grown nodes that
            # stay for the second job (by default they delete themselves after a minute idle).
            page.goto(url + "/settings")
            expect(page.locator("#setting-machine_type")).not_to_have_value("")
            page.fill("#setting-machine_type", "n2-highmem-2")
            page.fill("#setting-grow_idle_timeout_s", "900")
            page.fill("#setting-quantity", "1")
            page.click("#settings-form button[type=submit]")
            expect(page.locator("#settings-message")).to_have_text("Saved.")

            # Grow and shrink from the nodes page: start the cluster's one standing node, grow by
            # one more, then shrink one away.
            page.goto(url + "/nodes")
            page.click("#start-cluster")
            expect(page.locator("#controls-message")).to_contain_text("booting 1 node(s)", timeout=60_000)
            page.click("#grow")
            expect(page.locator("#grow")).to_be_enabled(timeout=60_000)
            expect(page.locator("#controls-message")).to_contain_text("booting 1 node(s)")
            expect(page.locator("#nodes-table tbody tr.node-ready")).to_have_count(2, timeout=120_000)
            page.click("#shrink")
            expect(page.locator("#controls-message")).to_contain_text("deleting", timeout=60_000)
            expect(page.locator("#nodes-table tbody tr.node-deleted")).to_have_count(1, timeout=60_000)
            expect(page.locator("#nodes-table tbody tr.node-ready")).to_have_count(1)

            # The user's program: the gcp backend is its default now, and it needs no Google credentials.
            user = {k: v for k, v in env.items() if k not in ("GCE_METADATA_HOST", "GCE_METADATA_IP", "CLOUDSDK_CONFIG")}
            user["NO_GCE_CHECK"] = "true"
            grown = run_program(GROWN_JOB, user, tmp_path, "grown")
            out, err = grown.communicate(timeout=240)
            assert grown.returncode == 0, out + err
            assert "RESULTS [0, 1, 4, 9, 16, 25, 36, 49, 64, 81, 100, 121]" in out, out + err
            assert "squaring 7" in out, "the function's output is streamed back to the caller"

            page.goto(url + "/jobs")
            job_row = page.locator("#jobs-table tbody tr").first
            expect(job_row).to_contain_text("square")
            expect(job_row).to_contain_text("done")
            expect(job_row).to_contain_text("12/12")
            page.screenshot(path=str(screenshots / "e2e-jobs.png"), full_page=True)
            job_row.locator("a").click()
            expect(page.locator("#job-logs")).to_contain_text("squaring 7")
            expect(page.locator("#inputs-table tbody tr")).to_have_count(12)
            page.click('#inputs-table tr[data-index="5"]')
            expect(page.locator("#input-output")).to_contain_text("squaring 5")
            page.screenshot(path=str(screenshots / "e2e-job.png"), full_page=True)
            page.goto(url + "/nodes")
            expect(page.locator("#nodes-table tbody tr").first).to_contain_text("n2-highmem-")  # the family set
            # The node's heartbeats (every 10 s) bring its CPU and memory use.
            expect(page.locator("#nodes-table tbody tr").first).to_contain_text(re.compile(r"\d+%"), timeout=60_000)
            expect(page.locator("#usage-chart svg polyline")).to_have_count(2)
            page.screenshot(path=str(screenshots / "e2e-nodes.png"), full_page=True)

            # A second, long job: Stop on the dashboard cancels it in its caller.
            long_job = run_program(LONG_JOB, user, tmp_path, "long")
            page.goto(url + "/jobs")
            stop = page.locator("#jobs-table tbody tr", has_text="slow").locator("button.stop")
            expect(stop).to_be_visible(timeout=120_000)
            try:  # it runs: some inputs are done
                expect(page.locator("#jobs-table tbody tr", has_text="slow")).to_contain_text(
                    re.compile(r"[1-9]\d*/400"), timeout=120_000)
            except AssertionError:
                long_job.kill()
                raise AssertionError("the long job never got going: " + "".join(long_job.communicate()))
            stopped_at = time.monotonic()
            stop.click()
            out, err = long_job.communicate(timeout=120)
            assert long_job.returncode == 0, out + err
            assert "STOPPED" in out and "stopped from the dashboard by owner@example.com" in out, out + err
            assert time.monotonic() - stopped_at < 60, "the job ran on long after Stop"
            expect(page.locator("#jobs-table tbody tr", has_text="slow")).to_contain_text("canceled", timeout=30_000)

            page.goto(url + "/")
            expect(page.locator("#jobs-table tbody tr")).to_have_count(2)
            page.screenshot(path=str(screenshots / "e2e-overview.png"), full_page=True)
        finally:
            context.close()
