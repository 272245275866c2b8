"""The `nodes` backend end to end: remote_parallel_map over node agents on 127.0.0.1."""

from __future__ import annotations

import _thread
import collections
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

import burla
from burla import remote_parallel_map
from burla_core.errors import (
    JobCanceled,
    NoCompatibleNodes,
    NoNodes,
    NodeDisconnected,
    UnauthorizedError,
    VersionMismatch,
)
from burla_core.node.testing import AgentProcess, start_agents

TOKEN = "nodes-backend-test-token-0123456789"
REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def three_nodes():
    agents = start_agents(3, TOKEN)
    for number, agent in enumerate(agents):
        agent.name = f"node{number}"
    yield agents
    for agent in agents:
        agent.close()


@pytest.fixture
def use_nodes(monkeypatch):
    def use(agents, token: str = TOKEN) -> str:
        nodes = ",".join(agent.url if isinstance(agent, AgentProcess) else agent for agent in agents)
        monkeypatch.setenv("BURLA_NODES", nodes)
        monkeypatch.setenv("BURLA_NODE_TOKEN", token)
        monkeypatch.setenv("BURLA_BACKEND", "nodes")
        return nodes

    return use


def node_jobs(agent: AgentProcess) -> list[dict]:
    from burla_core.node.client import node_client

    return node_client(agent.url, TOKEN).list_jobs()


def where_am_i(x):
    import os

    print(f"running {x}")
    return x, os.getppid()


def fails_on_three(x):
    if x == 3:
        raise KeyError(f"no {x}")
    return x


def record_interval(directory, key, seconds):
    import json
    import os
    import time

    started = time.time()
    time.sleep(seconds)
    with open(os.path.join(directory, f"{key}.json"), "w") as handle:
        json.dump([started, time.time(), os.getppid()], handle)
    return key


def max_overlap(directory: Path) -> tuple[int, set]:
    intervals = [json.loads(path.read_text()) for path in directory.glob("*.json")]
    events = sorted([(start, 1) for start, _, _ in intervals] + [(end, -1) for _, end, _ in intervals], key=lambda e: (e[0], e[1]))
    running = peak = 0
    for _, change in events:
        running += change
        peak = max(peak, running)
    return peak, {parent for _, _, parent in intervals}


def test_results_come_back_in_input_order_with_their_output(three_nodes, use_nodes, capsys):
    use_nodes(three_nodes)
    results = remote_parallel_map(where_am_i, list(range(60)), spinner=False)
    assert [value for value, _ in results] == list(range(60))
    agent_pids = {agent.pid for agent in three_nodes}
    assert {parent for _, parent in results} <= agent_pids
    out = capsys.readouterr().out
    assert sorted(line for line in out.splitlines() if line.startswith("running")) == sorted(f"running {i}" for i in range(60))


def test_tuples_are_unpacked_and_generator_yields_each_result_once(three_nodes, use_nodes):
    use_nodes(three_nodes)
    assert remote_parallel_map(pow, [(2, 3), (3, 2)], spinner=False) == [8, 9]
    got = list(remote_parallel_map(abs, [-i for i in range(200)], spinner=False, generator=True))
    assert sorted(got) == list(range(200))


def test_a_function_error_is_raised_with_its_type_and_input_index(three_nodes, use_nodes):
    use_nodes(three_nodes)
    with pytest.raises(KeyError) as caught:
        remote_parallel_map(fails_on_three, list(range(10)), spinner=False)
    assert caught.value.burla_input_index == 3
    time.sleep(0.2)
    assert all(not node_jobs(agent) for agent in three_nodes), "the failed job must be gone from every node"


def test_inputs_spread_over_every_slot_of_every_node(three_nodes, use_nodes, tmp_path):
    use_nodes(three_nodes)
    slots = 3 * 2  # each agent offers this machine's 2 CPUs
    remote_parallel_map(record_interval, [(str(tmp_path), i, 0.6) for i in range(slots)], spinner=False)
    peak, parents = max_overlap(tmp_path)
    assert peak == slots, f"{slots} calls should have run at once, {peak} did"
    assert parents == {agent.pid for agent in three_nodes}


def test_max_parallelism_holds_across_nodes(three_nodes, use_nodes, tmp_path):
    use_nodes(three_nodes)
    remote_parallel_map(record_interval, [(str(tmp_path), i, 0.15) for i in range(12)], spinner=False, max_parallelism=2)
    peak, parents = max_overlap(tmp_path)
    assert peak <= 2, f"max_parallelism=2 but {peak} calls ran at once"
    assert len(parents) == 2, "the two slots should be on two nodes"


def node_speed(x):
    import os
    import time

    time.sleep(0.08 if os.environ.get("BURLA_TEST_SLOW_NODE") else 0.01)
    return os.environ.get("BURLA_TEST_SLOW_NODE", "fast")


def test_a_fast_node_takes_more_inputs(use_nodes):
    fast = AgentProcess(TOKEN, ("--cpus", "1")).start()
    slow = AgentProcess(TOKEN, ("--cpus", "1"), env={"BURLA_TEST_SLOW_NODE": "slow"}).start()
    try:
        use_nodes([fast, slow])
        counts = collections.Counter(remote_parallel_map(node_speed, list(range(150)), spinner=False))
    finally:
        fast.close()
        slow.close()
    assert counts["fast"] + counts["slow"] == 150
    assert counts["fast"] > 2 * counts["slow"], f"the fast node should take most inputs: {counts}"


def test_a_version_mismatch_fails_before_any_input_is_sent(three_nodes, use_nodes, monkeypatch):
    from burla_backend_nodes import provisioner

    use_nodes(three_nodes)
    monkeypatch.setattr(provisioner, "burla_version", lambda: "9.9.9")
    with pytest.raises(VersionMismatch) as caught:
        remote_parallel_map(abs, [1, 2, 3], spinner=False)
    assert "9.9.9" in str(caught.value) and burla.__version__ in str(caught.value)
    monkeypatch.undo()
    use_nodes(three_nodes)
    monkeypatch.setattr(provisioner, "python_version", lambda: "3.99.0")
    with pytest.raises(VersionMismatch) as caught:
        remote_parallel_map(abs, [1, 2, 3], spinner=False)
    assert "3.99.0" in str(caught.value) and "Python 3." in str(caught.value)
    assert all(not node_jobs(agent) for agent in three_nodes), "no job may reach a node"


def test_a_wrong_token_is_refused_and_never_shown(three_nodes, use_nodes):
    use_nodes(three_nodes, token="not-the-token-at-all")
    with pytest.raises(UnauthorizedError) as caught:
        remote_parallel_map(abs, [1], spinner=False)
    assert "BURLA_NODE_TOKEN" in str(caught.value)
    assert "not-the-token-at-all" not in str(caught.value) and TOKEN not in str(caught.value)


def test_without_nodes_or_token_the_error_says_what_to_set(monkeypatch):
    monkeypatch.delenv("BURLA_NODES", raising=False)
    monkeypatch.setenv("BURLA_NODE_TOKEN", TOKEN)
    with pytest.raises(NoNodes, match="BURLA_NODES"):
        remote_parallel_map(abs, [1], spinner=False, backend="nodes")
    monkeypatch.setenv("BURLA_NODES", "http://127.0.0.1:9")
    monkeypatch.delenv("BURLA_NODE_TOKEN")
    with pytest.raises(UnauthorizedError, match="BURLA_NODE_TOKEN"):
        remote_parallel_map(abs, [1], spinner=False, backend="nodes")


def test_nodes_that_do_not_answer_are_left_out_and_named(three_nodes, use_nodes, capsys):
    dead = "http://127.0.0.1:9"  # the discard port: nothing listens there
    use_nodes([three_nodes[0], dead])
    assert remote_parallel_map(abs, [-1, -2], spinner=False) == [1, 2]
    assert dead in capsys.readouterr().err
    use_nodes([dead])
    with pytest.raises(NodeDisconnected, match="127.0.0.1:9"):
        remote_parallel_map(abs, [1], spinner=False)


def test_resources_no_node_has_fail_with_what_the_nodes_have(three_nodes, use_nodes):
    use_nodes(three_nodes)
    with pytest.raises(NoCompatibleNodes) as caught:
        remote_parallel_map(abs, [1], func_cpu=64, spinner=False)
    assert "func_cpu=64" in str(caught.value) and "2 CPUs" in str(caught.value)
    with pytest.raises(NoCompatibleNodes, match="A100"):
        remote_parallel_map(abs, [1], func_gpu="A100", spinner=False)
    with pytest.raises(NoCompatibleNodes, match="image"):
        remote_parallel_map(abs, [1], image="python:3.11", spinner=False)


def test_a_function_from_a_module_only_the_caller_has_runs_on_the_nodes(three_nodes, use_nodes, tmp_path, monkeypatch):
    (tmp_path / "only_on_the_caller.py").write_text("def f(x):\n    return x * 10\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    import only_on_the_caller

    use_nodes(three_nodes)
    try:
        assert remote_parallel_map(only_on_the_caller.f, [1, 2], spinner=False) == [10, 20]
    finally:
        del sys.modules["only_on_the_caller"]


def sleep_long(x):
    import time

    time.sleep(30)
    return x


def test_ctrl_c_cancels_the_job_on_every_node_within_two_seconds(three_nodes, use_nodes):
    use_nodes(three_nodes)
    interrupted_at = []

    def press_ctrl_c():
        interrupted_at.append(time.monotonic())
        _thread.interrupt_main()

    timer = threading.Timer(1.0, press_ctrl_c)
    timer.start()
    with pytest.raises(JobCanceled):
        remote_parallel_map(sleep_long, list(range(6)), spinner=False)
    elapsed = time.monotonic() - interrupted_at[0]
    assert elapsed < 2.0, f"Ctrl-C took {elapsed:.2f} s to stop the job"
    assert all(not node_jobs(agent) for agent in three_nodes), "the job must be gone from every node"


def test_several_callers_share_the_nodes_at_once(three_nodes, use_nodes, tmp_path):
    use_nodes(three_nodes)
    results: dict = {}

    def call(name):
        results[name] = remote_parallel_map(record_interval, [(str(tmp_path), f"{name}{i}", 0.3) for i in range(6)], spinner=False)

    threads = [threading.Thread(target=call, args=(name,)) for name in ("a", "b")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert results["a"] == [f"a{i}" for i in range(6)] and results["b"] == [f"b{i}" for i in range(6)]
    peak, _ = max_overlap(tmp_path)
    assert peak > 6 or peak == 6, "both jobs should run side by side on the shared slots"


def echo_bytes(data):
    return data


def test_a_large_input_and_result_travel_whole(three_nodes, use_nodes):
    use_nodes(three_nodes[:1])
    payload = os.urandom(20 * 1000 * 1000)
    assert remote_parallel_map(echo_bytes, [payload], spinner=False)[0] == payload


def test_detach_runs_the_job_on_the_nodes(three_nodes, use_nodes):
    use_nodes(three_nodes)
    assert remote_parallel_map(abs, [-1, -2, -3], spinner=False, detach=True) == [1, 2, 3]


def test_burla_node_cli_reports_health_and_jobs(three_nodes, monkeypatch):
    env = dict(os.environ, BURLA_NODES=three_nodes[0].url, BURLA_NODE_TOKEN=TOKEN)
    health = subprocess.run([sys.executable, "-m", "burla_cli", "node", "health"], capture_output=True, text=True, env=env, timeout=60)
    assert health.returncode == 0, health.stderr
    assert '"slots"' in health.stdout and TOKEN not in health.stdout
    jobs = subprocess.run([sys.executable, "-m", "burla_cli", "node", "jobs"], capture_output=True, text=True, env=env, timeout=60)
    assert jobs.returncode == 0, jobs.stderr
    token = subprocess.run([sys.executable, "-m", "burla_core.node", "token"], capture_output=True, text=True, timeout=60)
    assert len(token.stdout.strip()) >= 32


def test_the_conformance_suite_brings_up_its_own_agents_and_passes():
    """With no BURLA_NODES and no token, the nodes backend's test environment starts agents on
    127.0.0.1 for the suite: `pytest --pyargs conformance_tests --burla-backend nodes` needs no setup."""
    env = dict(os.environ)
    for name in ("BURLA_BACKEND", "BURLA_NODES", "BURLA_NODE_TOKEN", "BURLA_NODE_CA"):
        env.pop(name, None)
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "-x", "--pyargs", "conformance_tests",
         "--burla-backend", "nodes", "--timeout", "120"],
        capture_output=True, text=True, env=env, timeout=600, cwd=REPO,
    )
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-3000:]


def echo(value):
    return value


def test_big_inputs_and_results_of_every_form_round_trip_through_a_node(three_nodes, use_nodes):
    use_nodes(three_nodes[:1])
    data = os.urandom(12 * 1000 * 1000)
    values = [data, bytearray(data[:3_000_000]), memoryview(data).cast("i", (1000, 3000)), (data, 5)]
    results = remote_parallel_map(echo, [(value,) for value in values], spinner=False)
    assert results[0] == data and type(results[0]) is bytes
    assert results[1] == bytearray(data[:3_000_000]) and type(results[1]) is bytearray
    assert results[2].format == "i" and results[2].shape == (1000, 3000) and results[2].tobytes() == data
    assert results[3] == (data, 5)


def test_a_missing_ca_file_names_the_file_and_the_variable(three_nodes, use_nodes, monkeypatch, tmp_path):
    use_nodes(three_nodes[:1])
    missing = str(tmp_path / "no-such-ca.pem")
    monkeypatch.setenv("BURLA_NODE_CA", missing)
    with pytest.raises(burla.InvalidArgument) as caught:
        remote_parallel_map(abs, [1], spinner=False)
    assert missing in str(caught.value) and "BURLA_NODE_CA" in str(caught.value), str(caught.value)
    assert not isinstance(caught.value, burla.ServerError), "no node was contacted: it is not a ServerError"
