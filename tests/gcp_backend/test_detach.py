"""Detached jobs on a gcp cluster live on the cluster: they finish with the caller's machine
switched off, their status, counts and logs are in Firestore, and `burla jobs` / `burla jobs
results ID` on any machine logged into the cluster show and collect them."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest

import burla
from burla import remote_parallel_map
from burla_backend_gcp import schema
from burla_backend_gcp.cluster_jobs import ClusterJobSource
from conformance_tests._support import ScriptRun

from ..conftest import python_env
from .conftest import cluster_database, wait_until


def tripled_loudly(x):
    print(f"tripling {x}")
    return x * 3


def test_a_detached_job_runs_on_the_cluster_and_answers_like_a_normal_call(use_gcp, capfd):
    assert remote_parallel_map(tripled_loudly, list(range(12)), detach=True, backend="gcp", spinner=False) == [
        x * 3 for x in range(12)]
    out = capfd.readouterr().out
    assert all(f"tripling {x}\n" in out for x in range(12)), out
    (record,) = [r for r in ClusterJobSource().list_jobs() if r.function_name.endswith("tripled_loudly")]
    assert record.status == "done" and record.done == 12 and record.total == 12 and record.backend == "gcp"
    job = cluster_database(use_gcp).collection(schema.JOBS).document(record.job_id).get().to_dict()
    assert job["detach"] and job["runner_node"] and job["user"] == "tester@example.com"


def fails_on_two(x):
    if x == 2:
        raise ValueError("two is not allowed")
    return x


def test_a_detached_jobs_error_is_raised_with_its_input_index(use_gcp):
    with pytest.raises(ValueError, match="two is not allowed") as caught:
        remote_parallel_map(fails_on_two, [0, 1, 2, 3], detach=True, backend="gcp", spinner=False)
    assert caught.value.burla_input_index == 2


def test_a_detached_call_no_node_fits_fails_at_once(use_gcp):
    with pytest.raises(burla.NoCompatibleNodes):
        remote_parallel_map(fails_on_two, [0], image="registry.example/nowhere:1", detach=True, backend="gcp",
                            spinner=False)


DETACHED_CALLER = """
import sys, time
import burla

def slow_square(x):
    import time
    time.sleep(0.3)
    print(f"squared {x}")
    return x * x

print("calling", flush=True)
burla.remote_parallel_map(slow_square, list(range(24)), detach=True, backend="gcp", spinner=False)
"""


def burla_cli(env: dict, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "burla_cli", *args], capture_output=True, text=True, timeout=120,
                          env=python_env(**env))


def test_a_detached_job_finishes_with_its_caller_killed_and_another_machine_collects_it(use_gcp, tmp_path):
    gcp = use_gcp
    script = tmp_path / "caller.py"
    script.write_text(DETACHED_CALLER)
    caller = ScriptRun(str(script), "", extra_env=gcp.env)
    source = ClusterJobSource()

    def running_job():
        found = [r for r in source.list_jobs() if r.function_name == "slow_square" and r.status == "running"]
        return found[0] if found else None

    try:
        record = wait_until(running_job, 90, "the detached job to run on the cluster")
        wait_until(lambda: source.get(record.job_id).done >= 1, 60, "its first result")
    finally:
        caller.kill()  # SIGKILL: the machine that started it is gone
    assert source.get(record.job_id).status == "running"
    # Another machine: no data dir of the caller's, only the cluster's URL and a token of the user.
    other = {"BURLA_DATA_DIR": str(tmp_path / "other-machine"), **gcp.env}
    listed = burla_cli(other, "jobs")
    assert record.job_id in listed.stdout and "slow_square" in listed.stdout, listed.stdout + listed.stderr
    wait_until(lambda: source.get(record.job_id).status == "done", 120, "the job to finish without its caller")
    collected = burla_cli(other, "jobs", "results", record.job_id[:6], "--json")
    assert collected.returncode == 0, collected.stderr
    assert json.loads(collected.stdout) == [x * x for x in range(24)]  # each result once, in input order
    logs = burla_cli(other, "jobs", "logs", record.job_id)
    assert all(f"squared {x}\n" in logs.stdout for x in range(24)), logs.stdout
    status = burla_cli(other, "jobs", "status", record.job_id)
    assert "done" in status.stdout and "24/24" in status.stdout, status.stdout
    pruned = burla_cli(other, "jobs", "prune", "--yes")
    assert pruned.returncode == 0 and record.job_id not in burla_cli(other, "jobs").stdout


def endless(x):
    import time

    while True:
        time.sleep(0.05)


def test_burla_jobs_cancel_stops_a_detached_job_on_the_cluster(use_gcp, tmp_path):
    gcp = use_gcp
    generator = remote_parallel_map(endless, [1, 2], detach=True, generator=True, backend="gcp", spinner=False)
    source = ClusterJobSource()

    def running_job():
        found = [r for r in source.list_jobs() if r.function_name == "endless" and r.status == "running"]
        return found[0] if found else None

    try:
        record = wait_until(running_job, 90, "the endless job to run")
    finally:
        generator.close()  # stops following; the job goes on
    time.sleep(1)
    assert source.get(record.job_id).status == "running"
    canceled = burla_cli(gcp.env, "jobs", "cancel", record.job_id, "--timeout", "60")
    assert canceled.returncode == 0 and "canceled" in canceled.stdout, canceled.stdout + canceled.stderr
    assert source.get(record.job_id).status == "canceled"


def test_burla_jobs_with_an_expired_token_says_run_burla_login(gcp, tmp_path):
    token = gcp.cluster.issue_token("late@example.com", lifetime_s=1)
    time.sleep(1.5)
    listed = burla_cli({"BURLA_GCP_CLUSTER_URL": gcp.cluster.url, "BURLA_GCP_TOKEN": token,
                        "BURLA_DATA_DIR": str(tmp_path)}, "jobs")
    assert listed.returncode == 0 and "Traceback" not in listed.stderr
    assert "run `burla login`" in listed.stderr and "expired" in listed.stderr, listed.stderr
