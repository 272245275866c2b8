"""The cluster service: every request authenticated, tokens stored hashed and refused when
expired, revoked or another cluster's (with "run `burla login`"), administrators recognised by
their Google credentials, the node firewall opened only to callers, jobs recorded."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest

from burla import remote_parallel_map
from burla_backend_gcp import clients, schema
from burla_core.errors import UnauthorizedError

from ..conftest import python_env
from .conftest import cluster_database, wait_until


def http(url: str, method: str = "GET", token: str | None = None, body: dict | None = None, headers: dict | None = None):
    request = urllib.request.Request(url, method=method, data=json.dumps(body).encode() if body is not None else None,
                                     headers={**({"Authorization": f"Bearer {token}"} if token else {}),
                                              "Content-Type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(request, timeout=30) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"{}")


def test_every_request_needs_a_burla_token(gcp):
    url = gcp.cluster.url
    assert http(url + "/healthz") == (200, {"ok": True})
    status, answer = http(url + "/v1/cluster")
    assert status == 401 and answer["error"] == "unauthenticated" and "burla login" in answer["message"]
    status, answer = http(url + "/v1/nodes", token="not-a-burla-token")
    assert status == 401 and answer["error"] == "token_unknown"
    status, answer = http(url + "/v1/cluster", token=gcp.user_token)
    assert status == 200 and answer["project"] == gcp.standin.project_id and answer["caller"] == "tester@example.com"


def test_a_node_saying_its_document_changed_needs_the_node_token(gcp):
    url = f"{gcp.cluster.url}/v1/nodes/any-node/changed"
    assert http(url, "POST", body={})[0] == 401
    assert http(url, "POST", token=gcp.user_token, body={})[0] == 401, "a user token is not the node token"
    status, answer = http(url, "POST", token=gcp.cluster.node_token, body={})
    assert (status, answer) == (200, {"ok": True})


def test_an_expired_token_gets_a_clear_run_burla_login_error_and_no_stack_trace(gcp, monkeypatch):
    token = gcp.cluster.issue_token("late@example.com", lifetime_s=1)
    time.sleep(1.5)
    monkeypatch.setenv("BURLA_GCP_CLUSTER_URL", gcp.cluster.url)
    monkeypatch.setenv("BURLA_GCP_TOKEN", token)
    with pytest.raises(UnauthorizedError) as caught:
        remote_parallel_map(abs, [-1], backend="gcp", spinner=False)
    message = str(caught.value)
    assert "expired" in message and "run `burla login`" in message
    assert caught.value.__cause__ is None and caught.value.__suppress_context__
    script = "import burla\nburla.remote_parallel_map(abs, [-1], backend='gcp', spinner=False)\n"
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60,
                            env=python_env(BURLA_GCP_CLUSTER_URL=gcp.cluster.url, BURLA_GCP_TOKEN=token))
    assert result.returncode == 1
    assert result.stderr.count("Traceback") == 1 and "During handling" not in result.stderr, result.stderr
    assert "urllib" not in result.stderr and "run `burla login`" in result.stderr.splitlines()[-1], result.stderr


def test_revoked_and_unknown_tokens_are_refused(gcp, monkeypatch):
    monkeypatch.setenv("BURLA_GCP_CLUSTER_URL", gcp.cluster.url)
    monkeypatch.setenv("BURLA_GCP_TOKEN", schema.new_token())  # another cluster's, or made up
    with pytest.raises(UnauthorizedError, match="does not know your burla token.*run `burla login`"):
        remote_parallel_map(abs, [-1], backend="gcp", spinner=False)
    token = gcp.cluster.issue_token("leaver@example.com")
    database = cluster_database(gcp)
    database.collection(schema.USER_TOKENS).document(schema.token_hash(token)).update({"revoked": True})
    assert http(gcp.cluster.url + "/v1/cluster", token=token)[1]["error"] == "token_revoked"


def test_tokens_are_stored_only_as_their_hash(gcp):
    token = gcp.cluster.issue_token("hashed@example.com")
    database = cluster_database(gcp)
    documents = {snapshot.id: snapshot.to_dict() for snapshot in database.collection(schema.USER_TOKENS).stream()}
    assert schema.token_hash(token) in documents
    assert documents[schema.token_hash(token)]["email"] == "hashed@example.com"
    assert token not in json.dumps(documents, default=str)


def test_administrators_are_the_google_identities_that_may_read_the_cluster_secret(gcp):
    owner = gcp.standin.mint_token()  # the project's owner: may read every secret
    stranger = gcp.standin.mint_token("user:eve@example.com")  # in no policy at all
    google = {"X-Burla-Credential": "google"}
    status, answer = http(gcp.cluster.url + "/v1/tokens", "POST", owner, {"email": "new@example.com"}, google)
    assert status == 200 and answer["token"].startswith(schema.TOKEN_PREFIX)
    assert http(gcp.cluster.url + "/v1/cluster", token=answer["token"])[0] == 200
    status, answer = http(gcp.cluster.url + "/v1/tokens", "POST", stranger, {"email": "x@example.com"}, google)
    assert status == 403 and answer["error"] == "not_an_admin" and schema.CLUSTER_SECRET in answer["message"]
    status, answer = http(gcp.cluster.url + "/v1/tokens", "POST", gcp.user_token, {"email": "x@example.com"})
    assert status == 403 and answer["error"] == "admin_required"


def test_the_node_port_admits_only_the_addresses_callers_come_from(gcp, use_gcp):
    assert remote_parallel_map(abs, [-3], backend="gcp", spinner=False) == [3]
    call = {"call": {"python": "3.11.7", "burla": "0.1.0"}, "job_id": "firewall-probe"}
    http(gcp.cluster.url + "/v1/jobs", "POST", gcp.user_token, call, {"X-Forwarded-For": "198.51.100.9, 203.0.113.7"})
    firewalls = clients.firewalls(endpoint=gcp.standin.url, credentials=gcp.standin.credentials())

    def ranges():
        rule = firewalls.get(project=gcp.standin.project_id, firewall=schema.FIREWALL_RULE)
        return sorted(rule.source_ranges)

    admitted = wait_until(lambda: "203.0.113.7/32" in ranges() and ranges(), 30, "the caller's address in the rule")
    assert "127.0.0.1/32" in admitted and "198.51.100.9/32" not in admitted  # a client's own claim is not trusted
    assert not any(item.endswith("/0") for item in admitted)


def test_jobs_are_recorded_with_their_caller(gcp, use_gcp):
    def add_one(x):
        return x + 1

    assert remote_parallel_map(add_one, [1, 2], backend="gcp", spinner=False) == [2, 3]
    database = cluster_database(gcp)

    def recorded():
        jobs = [s.to_dict() for s in database.collection(schema.JOBS).stream()]
        return [job for job in jobs if job.get("function_name", "").endswith("add_one") and job.get("status") == "done"]

    (job,) = wait_until(recorded, 15, "the job's record")
    assert job["user"] == "tester@example.com" and job["detach"] is False and job["ended_at"] >= job["created_at"]


def test_the_service_module_runs_as_cloud_run_runs_its_container(gcp):
    """It was deployed through the Cloud Run API as an image the stand-in plays with
    `python -m burla_backend_gcp.service` (PORT from the environment)."""
    run = clients.run_services(endpoint=gcp.standin.url, credentials=gcp.standin.credentials())
    service = run.get_service(name=f"projects/{gcp.standin.project_id}/locations/us-central1/services/{schema.SERVICE_NAME}")
    assert service.uri == gcp.cluster.url
    assert service.template.service_account.startswith(schema.SERVICE_ACCOUNT_ID + "@")


def test_a_detached_jobs_runner_token_serves_that_job_only(gcp):
    token = schema.new_token()
    record = schema.UserToken(email="tester@example.com", expires_at=time.time() + 60, kind=schema.TOKEN_KIND_RUNNER,
                              job_id="the-runners-job")
    cluster_database(gcp).collection(schema.USER_TOKENS).document(schema.token_hash(token)).set(record.to_document())
    assert http(gcp.cluster.url + "/v1/nodes", token=token)[1]["error"] == "runner_token"
    assert http(gcp.cluster.url + "/v1/detached", token=token)[1]["error"] == "runner_token"
    call = {"call": {"python": "3.11.7", "burla": "0.1.0", "grow": True}}
    status, answer = http(gcp.cluster.url + "/v1/jobs", "POST", token, {**call, "job_id": "another-job"})
    assert status == 403 and answer["error"] == "wrong_job"
    assert http(gcp.cluster.url + "/v1/jobs", "POST", token, {**call, "job_id": "the-runners-job"})[0] == 200
    assert http(gcp.cluster.url + "/v1/jobs/someone-elses/nodes?timeout=0", token=token)[0] == 404
