"""Environment sync end to end: callers in venvs of their own, an agent in a bare venv in another
directory, packages from a PEP 503 index on 127.0.0.1 (never a public one)."""

from __future__ import annotations

import json
import os
import subprocess
import textwrap
import threading
from pathlib import Path

import pytest

from ..node.node_helpers import Http
from .conftest import PROBE
from .packaging_helpers import VenvAgent, bare_venv, install_into, make_wheel, offline_install_env


@pytest.fixture(scope="module")
def start_venv_agent(agent_python, package_index, uv_cache, tmp_path_factory):
    started = []

    def start(*args: str) -> VenvAgent:
        home = tmp_path_factory.mktemp("agent-home")
        env = offline_install_env(package_index.url, uv_cache)
        agent = VenvAgent(agent_python, "sync-test-token-0123456789", ("--env-cache", str(home / "cache"), *args), env, home)
        started.append(agent)
        return agent.start(timeout=60)

    yield start
    for agent in started:
        agent.close()


@pytest.fixture(scope="module")
def agent(start_venv_agent):
    # Room for two jobs of two calls each at once (a node never runs more calls than fit).
    return start_venv_agent("--cpus", "4", "--ram-gb", "16")


def health(agent) -> dict:
    status, _, body = Http(agent.url, agent.token).request("GET", "/v1/health")
    assert status == 200, body
    return json.loads(body)["environments"]


CALLER = textwrap.dedent("""
    import json, os, sys, time
    import burla, helpers
    from burla import remote_parallel_map

    def where_things_are(x):
        import bsync_alpha
        try:
            import bsync_beta
            beta = bsync_beta.VERSION
        except ImportError:
            beta = None
        started = time.time()
        time.sleep(SLEEP)
        return {"alpha": bsync_alpha.VERSION, "alpha_file": bsync_alpha.where(), "beta": beta,
                "double": helpers.double(x), "cwd": os.getcwd(), "started": started, "ended": time.time()}

    options = json.loads(sys.argv[1]) if len(sys.argv) > 1 else {}
    try:
        results = remote_parallel_map(where_things_are, [1, 2], spinner=False, backend_options=options)
        print(json.dumps({"results": results}))
    except Exception as error:
        print(json.dumps({"error": type(error).__name__, "message": str(error),
                          "fields": {k: getattr(error, k, None) for k in ("package", "version", "node", "installer_output")}}))
""")


def run_caller(python: Path, agent, tmp_path: Path, options: dict | None = None, sleep: float = 0.0,
               env_extra: dict | None = None) -> tuple[dict, str]:
    script_dir = tmp_path / f"script-{os.urandom(3).hex()}"
    script_dir.mkdir()
    (script_dir / "helpers.py").write_text("def double(x):\n    return 2 * x\n")
    (script_dir / "main.py").write_text(CALLER.replace("SLEEP", repr(sleep)))
    env = {key: value for key, value in os.environ.items() if not key.startswith(("PIP_", "UV_", "BURLA_"))}
    env.pop("PYTHONPATH", None)
    env.update(BURLA_BACKEND="nodes", BURLA_NODES=agent.url, BURLA_NODE_TOKEN=agent.token, **(env_extra or {}))
    finished = subprocess.run(
        [str(python), "main.py", json.dumps(options or {})], cwd=script_dir, env=env,
        capture_output=True, text=True, timeout=180,
    )
    assert finished.returncode == 0, f"the caller failed:\n{finished.stderr}\nagent log:\n{agent.log()}"
    lines = [line for line in finished.stdout.splitlines() if line.startswith("{")]
    assert lines, f"the caller printed no result:\n{finished.stdout}\n{finished.stderr}"
    return json.loads(lines[-1]), finished.stderr


def test_a_package_only_the_caller_has_and_a_module_next_to_its_script_both_work(agent, caller_venvs, tmp_path):
    before = health(agent)
    answer, stderr = run_caller(caller_venvs["1.0"], agent, tmp_path)
    assert "results" in answer, answer
    for result in answer["results"]:
        assert result["alpha"] == "1.0"
        assert result["alpha_file"].startswith(before["root"]), "bsync_alpha was not imported from the job's environment"
        assert result["beta"] == "1.0", "the agent's own package is not visible under the job's layer"
        assert not result["cwd"].startswith(str(tmp_path)), "the agent ran in the caller's directory"
    assert [r["double"] for r in answer["results"]] == [2, 4]
    assert "installing 1 package" in stderr, stderr


def test_a_second_job_with_the_same_environment_does_no_install(agent, caller_venvs, tmp_path):
    run_caller(caller_venvs["1.0"], agent, tmp_path)  # made here or by the test before
    before = health(agent)
    answer, stderr = run_caller(caller_venvs["1.0"], agent, tmp_path)
    assert [r["alpha"] for r in answer["results"]] == ["1.0", "1.0"]
    after = health(agent)
    assert after["installs"] == before["installs"], "the second job installed again"
    assert after["environments"] == before["environments"]
    assert "installing" not in stderr


def test_the_callers_versions_win_and_a_new_version_makes_a_new_environment(agent, caller_venvs, tmp_path):
    run_caller(caller_venvs["1.0"], agent, tmp_path)
    before = health(agent)
    answer, stderr = run_caller(caller_venvs["2.0"], agent, tmp_path)
    assert {(r["alpha"], r["beta"]) for r in answer["results"]} == {("2.0", "2.0")}, (
        "the job did not see its own versions (bsync-beta 1.0 is the agent's)"
    )
    after = health(agent)
    assert after["environments"] == before["environments"] + 1
    assert "installing 2 packages" in stderr


def test_two_jobs_with_two_versions_of_one_package_run_at_once_on_one_node(agent, caller_venvs, tmp_path):
    for version in ("1.0", "2.0"):
        run_caller(caller_venvs[version], agent, tmp_path)  # both environments ready
    answers: dict = {}

    def call(version):
        answers[version] = run_caller(caller_venvs[version], agent, tmp_path / version, sleep=3.0)[0]

    for version in ("1.0", "2.0"):
        (tmp_path / version).mkdir()
    threads = [threading.Thread(target=call, args=(version,)) for version in ("1.0", "2.0")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(200)
    windows = {}
    for version, answer in answers.items():
        assert {r["alpha"] for r in answer["results"]} == {version}, answer
        windows[version] = (min(r["started"] for r in answer["results"]), max(r["ended"] for r in answer["results"]))
    (start_1, end_1), (start_2, end_2) = windows["1.0"], windows["2.0"]
    assert start_1 < end_2 and start_2 < end_1, f"the two jobs did not overlap: {windows}"


def test_a_package_missing_from_the_index_fails_with_PackageInstallFailed(agent, farm, uv_cache, package_index, tmp_path):
    # bsync-ghost is installed in the caller from a wheel file no index has.
    ghost = make_wheel(tmp_path / "elsewhere", "bsync-ghost", "0.3", {"bsync_ghost.py": "X = 1\n"})
    python = bare_venv(tmp_path / "ghost-venv", farm)
    install_into(python, [f"{PROBE}==1.0", str(ghost)], package_index.url, uv_cache)
    answer, _ = run_caller(python, agent, tmp_path)
    assert answer.get("error") == "PackageInstallFailed", answer
    fields = answer["fields"]
    assert (fields["package"], fields["version"]) == ("bsync-ghost", "0.3"), fields
    assert fields["node"] and "bsync-ghost" in fields["installer_output"]
    assert "bsync-ghost==0.3" in answer["message"]


def test_sync_packages_false_runs_in_the_nodes_own_environment(agent, start_venv_agent, caller_venvs, tmp_path):
    answer, _ = run_caller(caller_venvs["1.0"], agent, tmp_path, options={"sync_packages": False})
    assert answer.get("error") == "ModuleNotFoundError" and "bsync_alpha" in answer["message"], answer
    no_sync = start_venv_agent("--no-sync-packages")
    answer, _ = run_caller(caller_venvs["1.0"], no_sync, tmp_path)
    assert answer.get("error") == "ModuleNotFoundError", answer
    assert health(no_sync)["sync_packages"] is False
