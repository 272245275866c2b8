"""The dashboard in headless Chromium, served by the cluster service `burla install` deployed:
every page with live data (and its screenshot, a build artifact), a job of 100,000 inputs a page
at a time, the Stop button reaching the job's caller, settings, and users added and removed.

Jobs are started through the service's API as the gcp provisioner starts them (POST /v1/jobs),
and their inputs reported by the reporter the gcp transport runs; nodes are node documents as a
VM's supervisor writes them. The end-to-end test (test_e2e_login.py) does it all for real."""

from __future__ import annotations

import time

import pytest

from burla_backend_gcp import schema
from burla_backend_gcp.job_reporter import JobReporter
from burla_backend_gcp.service.reports import parse_report, write_report
from burla_core.types import ERROR, LOGS, RESULTS, ErrorInfo, EventSink, InputBatch

from .service_client import admin_headers, call, sign_in

pytestmark = pytest.mark.usefixtures("chromium")


def expect(locator):
    """Playwright's assertions (they work under the pages' CSP, which forbids evaluating strings)."""
    from playwright.sync_api import expect as playwright_expect

    return playwright_expect(locator)


@pytest.fixture(scope="module")
def admin(installed):
    """An admin's token (for the reporter) and dashboard session (for the browser)."""
    token = call("POST", installed.url + "/v1/tokens", headers=admin_headers(installed.standin),
                 body={"email": "owner@example.com"}).json()["token"]
    cookie, _ = sign_in(installed.url, admin_headers(installed.standin))
    return {"token": token, "cookie": cookie}


@pytest.fixture
def browser_page(chromium, installed, admin):
    context = chromium.new_context(viewport={"width": 1280, "height": 900})
    context.add_cookies([{"name": "burla_session", "value": admin["cookie"], "url": installed.url}])
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    yield page
    context.close()
    assert not errors, f"the page's script failed: {errors}"


def start_job(installed, token: str, total: int) -> str:
    """A job as the gcp provisioner starts one (grow=True, no node yet)."""
    call_wire = {"func_cpu": 1, "func_ram": 1, "grow": True, "python": "3.11.7", "burla": "0.1.0"}
    answer = call("POST", installed.url + "/v1/jobs", headers={"Authorization": f"Bearer {token}"},
                  body={"call": call_wire})
    assert answer.status == 200, answer.text
    job_id = answer.json()["job_id"]
    started = call("POST", installed.url + f"/v1/jobs/{job_id}/start", headers={"Authorization": f"Bearer {token}"},
                   body={"function_name": "square", "total": total, "wanted_slots": 0})
    assert started.status == 200, started.text
    return job_id


def seed_node(installed, node_id: str = "burla-node-test1") -> None:
    now = time.time()
    installed.firestore().collection(schema.NODES).document(node_id).set({
        "node_id": node_id, "status": schema.RUNNING, "machine_type": "n2-standard-4", "image": "python:3.11",
        "cpus": 4, "ram_gb": 16, "gpus": [{"index": 0, "name": "A100_40G"}], "created_at": now, "heartbeat_at": now,
        "cpu_percent": 71.5, "memory_percent": 33.0,
        "usage": [{"t": now - 50 + 10 * i, "cpu": 20.0 + 10 * i, "memory": 30.0 + i} for i in range(6)]})


def report(reporter: JobReporter, node: str, first: int, count: int, fail_last: bool = False) -> None:
    sink = reporter.sink(EventSink())
    reporter.submitted(node, InputBatch(first, [(i, b"") for i in range(first, first + count)]))
    sink.put([LOGS, node, [(i, 1, f"squaring {i}\n") for i in range(first, first + count)]])
    ends = first + count - (1 if fail_last else 0)
    sink.put([RESULTS, node, [(i, b"") for i in range(first, ends)]])
    if fail_last:
        sink.put([ERROR, node, (ends, ErrorInfo("ValueError", f"input {ends} is bad", "ValueError: bad"))])


def test_every_page_shows_live_data_and_is_saved_as_a_screenshot(installed, admin, browser_page, screenshots):
    page, url = browser_page, installed.url
    seed_node(installed)
    job_id = start_job(installed, admin["token"], total=60)
    reporter = JobReporter(url, admin["token"], job_id, total=60)
    report(reporter, "burla-node-test1", 0, 20, fail_last=True)
    reporter.flush()

    page.goto(url + "/")
    page.wait_for_selector(f'#jobs-table tr[data-job="{job_id}"]')
    node_row = page.inner_text('#nodes-table tr[data-node="burla-node-test1"]')
    for shown in ("RUNNING", "n2-standard-4", "python:3.11", "A100_40G", "72%", "33%"):
        assert shown in node_row, f"{shown!r} missing from the node row: {node_row!r}"
    assert page.locator("#usage-chart svg polyline").count() == 2  # CPU and memory
    assert "burla login --cluster-url" in page.inner_text("#quickstart")
    page.screenshot(path=str(screenshots / "overview.png"), full_page=True)

    page.goto(url + f"/jobs/{job_id}")
    page.wait_for_selector('#inputs-table tr[data-index="19"]')
    expect(page.locator("#job-summary")).to_contain_text("20/60")
    assert "1 failed" in page.inner_text("#job-summary")
    assert page.locator("#progress-chart svg polyline").count() == 2
    assert "[3] squaring 3" in page.inner_text("#job-logs")
    page.click('#inputs-table tr[data-index="19"]')
    expect(page.locator("#input-output")).to_contain_text("ValueError")
    assert page.inner_text('#inputs-table tr[data-index="25"]').split("\t")[1].strip() == "waiting"

    # Live: more inputs end while the page is open, and it shows them without a reload.
    report(reporter, "burla-node-test1", 20, 40)
    reporter.close()
    expect(page.locator("#job-summary")).to_contain_text("60/60", timeout=15_000)
    page.screenshot(path=str(screenshots / "job.png"), full_page=True)

    for path, name, marker in (("/nodes", "nodes", "#nodes-table tbody tr"), ("/jobs", "jobs", "#jobs-table tbody tr"),
                               ("/settings", "settings", "#users-table tbody tr")):
        page.goto(url + path)
        page.wait_for_selector(marker)
        page.screenshot(path=str(screenshots / f"{name}.png"), full_page=True)


def test_a_job_of_100000_inputs_is_shown_a_page_at_a_time(installed, admin, browser_page):
    page, url, total = browser_page, installed.url, 100_000
    job_id = start_job(installed, admin["token"], total=total)
    client = installed.firestore()
    began = time.time()
    # The first and the last 500 inputs reported, as the caller's reports leave them (the pages
    # between read the same way; writing all 100,000 only costs the emulator a minute).
    for first in (0, total - 500):
        write_report(client, job_id, parse_report({
            "inputs": [{"index": i, "status": "done", "node": "burla-node-test1", "started_at": began,
                        "ended_at": began + 0.5, "output": f"squaring {i}\n"} for i in range(first, first + 500)],
            "done": 1000, "failed": 0, "running": 0, "total": total}))

    opened = time.monotonic()
    page.goto(url + f"/jobs/{job_id}")
    page.wait_for_selector('#inputs-table tr[data-index="49"]')
    first_page_s = time.monotonic() - opened
    assert page.locator("#inputs-table tbody tr").count() == 50, "a page shows 50 inputs, never all of them"
    assert "page 1 of 2000" in page.inner_text("#page-label")
    page.click("#next-page")
    page.wait_for_selector('#inputs-table tr[data-index="99"]')
    page.fill("#goto-input", "50000")
    page.click("text=Show")
    expect(page.locator('#inputs-table tr[data-index="50000"]')).to_contain_text("waiting")

    page.fill("#goto-input", "99999")
    page.click("text=Show")
    page.wait_for_selector('#inputs-table tr[data-index="99999"]')
    expect(page.locator("#input-output")).to_contain_text("squaring 99999")
    assert page.locator("#inputs-table tbody tr").count() == 50 and "page 2000 of 2000" in page.inner_text("#page-label")
    assert first_page_s < 20, f"the first page of a 100,000-input job took {first_page_s:.1f} s"
    size = len(call("GET", url + f"/v1/dashboard/jobs/{job_id}/inputs?page=1999&size=50",
                    cookie=None, headers={"Authorization": f"Bearer {admin['token']}"}).body)
    assert size < 20_000, f"one page of inputs is {size} bytes"


def test_stop_on_the_dashboard_reaches_the_jobs_caller(installed, admin, browser_page):
    page, url = browser_page, installed.url
    job_id = start_job(installed, admin["token"], total=10)
    reporter = JobReporter(url, admin["token"], job_id, total=10)
    try:
        page.goto(url + "/jobs")
        page.click(f'button.stop[data-job="{job_id}"]')
        deadline = time.monotonic() + 15
        while reporter.stop_requested() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        assert reporter.stop_requested() == "stopped from the dashboard by owner@example.com"
        expect(page.locator(f'tr[data-job="{job_id}"]')).to_contain_text("stopping", timeout=10_000)
    finally:
        reporter.close()


def test_an_admin_changes_settings_and_adds_and_removes_users(installed, chromium, browser_page):
    page, url = browser_page, installed.url
    page.goto(url + "/settings")
    expect(page.locator("#setting-machine_type")).not_to_have_value("")
    page.fill("#setting-machine_type", "n2-standard-8")
    page.fill("#setting-idle_timeout_s", "1200")
    page.click("#settings-form button[type=submit]")
    expect(page.locator("#settings-message")).to_have_text("Saved.")
    config = installed.firestore().collection(schema.CONFIG_COLLECTION).document(schema.CONFIG_DOCUMENT).get().to_dict()
    assert config["machine_type"] == "n2-standard-8" and config["idle_timeout_s"] == 1200
    page.fill("#setting-machine_type", "not a machine")
    page.click("#settings-form button[type=submit]")
    expect(page.locator("#settings-message")).to_contain_text("machine_type must be")

    page.fill("#new-user", "dana@example.com")
    page.click("#add-user button")
    page.wait_for_selector('#users-table tr[data-user="dana@example.com"]')
    invitation = page.inner_text("#users-message").rsplit(": ", 1)[1].strip()
    assert invitation.startswith(url + "/signin?code=")

    dana = chromium.new_context()
    try:
        dana_page = dana.new_page()
        dana_page.goto(invitation)
        dana_page.wait_for_selector("#cards")
        assert "dana@example.com" in dana_page.inner_text("header") and "(admin)" not in dana_page.inner_text("header")
        dana_page.goto(url + "/settings")
        assert dana_page.locator("#users-table").count() == 0 and dana_page.is_disabled("#setting-machine_type")

        dana_token = call("POST", url + "/v1/tokens", headers=admin_headers(installed.standin),
                          body={"email": "dana@example.com"}).json()["token"]
        assert call("GET", url + "/v1/cluster", headers={"Authorization": f"Bearer {dana_token}"}).status == 200

        page.click('#users-table tr[data-user="dana@example.com"] button.remove-user')
        expect(page.locator("#users-message")).to_contain_text("removed")
        refused = call("GET", url + "/v1/cluster", headers={"Authorization": f"Bearer {dana_token}"})
        assert refused.status == 401 and refused.json()["error"] == "token_revoked", "a removed user's token still works"
        dana_page.goto(url + "/")
        assert "Not signed in" in dana_page.inner_text("main")
    finally:
        dana.close()


def test_inputs_that_end_before_the_provisioner_knows_the_job_are_reported_too(installed, admin):
    """The transport opens a job's first sessions before the provisioner learns the job (the core
    calls watch_job after): what those sessions see is kept, then sent once the job is bound."""
    from burla_backend_gcp import job_reporter

    url = installed.url
    job_id = start_job(installed, admin["token"], total=3)
    early = job_reporter.reporter_for("core-job-early")  # as the transport's first open_session does
    try:
        report(early, "burla-node-test1", 0, 3)
        job_reporter.reporter_for("core-job-early").bind(url, admin["token"], job_id, total=3)  # watch_job
        early.flush()
    finally:
        job_reporter.unregister("core-job-early")
        early.close()
    page = call("GET", url + f"/v1/dashboard/jobs/{job_id}/inputs?page=0&size=25",
                headers={"Authorization": f"Bearer {admin['token']}"}).json()
    assert [row["status"] for row in page["inputs"]] == ["done", "done", "done"], page
