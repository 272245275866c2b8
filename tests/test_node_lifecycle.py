"""How jobs on node agents begin and end: a caller that freezes or goes away, a script that ends
holding a half-read generator, several callers sharing a node, and an agent kept responsive
while it hands a big function to new workers."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from burla_core.node.client import node_client
from burla_core.node.testing import start_agents

TOKEN = "node-lifecycle-test-token-0123456789"
REPO = Path(__file__).resolve().parent.parent


def wait_until(condition, what: str, timeout: float) -> float:
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > timeout:
            raise AssertionError(f"{what} did not happen within {timeout} s")
        time.sleep(0.05)
    return time.monotonic() - started


def caller_env(agent) -> dict:
    env = dict(os.environ, BURLA_NODES=agent.url, BURLA_NODE_TOKEN=TOKEN, BURLA_BACKEND="nodes")
    env["PYTHONPATH"] = os.pathsep.join([str(REPO)] + [p for p in sys.path if p])
    return env


def start_script(tmp_path, source: str, agent) -> subprocess.Popen:
    script = tmp_path / "caller.py"
    script.write_text(textwrap.dedent(source))
    return subprocess.Popen(
        [sys.executable, str(script)], env=caller_env(agent), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


@pytest.fixture
def leased_agent():
    (agent,) = start_agents(1, TOKEN, args=("--job-lease", "3", "--cpus", "2"))
    yield agent
    agent.close()


def jobs_on(agent) -> list[dict]:
    return node_client(agent.url, TOKEN).list_jobs()


LONG_JOB = """
    import time
    from burla import remote_parallel_map

    def nap(x):
        time.sleep(60)
        return x

    print("starting", flush=True)
    remote_parallel_map(nap, [1, 2], spinner=False, func_ram=1)
"""


def test_a_frozen_caller_loses_its_job_after_the_lease(leased_agent, tmp_path):
    caller = start_script(tmp_path, LONG_JOB, leased_agent)
    try:
        wait_until(lambda: jobs_on(leased_agent), "the job reaching the node", 30)
        caller.send_signal(signal.SIGSTOP)  # a laptop lid: the connection stays open, nothing is sent
        took = wait_until(lambda: not jobs_on(leased_agent), "the frozen caller's job being canceled", 20)
        assert took < 15, f"the job outlived its 3 s lease by {took:.1f} s"
        assert "has not been heard from" in leased_agent.log()
    finally:
        caller.send_signal(signal.SIGCONT)
        caller.kill()
        caller.wait(10)


def test_a_killed_caller_loses_its_job_after_the_lease(leased_agent, tmp_path):
    caller = start_script(tmp_path, LONG_JOB, leased_agent)
    wait_until(lambda: jobs_on(leased_agent), "the job reaching the node", 30)
    caller.kill()
    caller.wait(10)
    wait_until(lambda: not jobs_on(leased_agent), "the dead caller's job being canceled", 20)


HALF_READ_GENERATOR = """
    import time
    import warnings
    from burla import remote_parallel_map

    warnings.simplefilter("always")

    def slow(x):
        time.sleep(0.2 if x == 0 else 30)
        return x

    results = remote_parallel_map(slow, range(6), generator=True, spinner=False, func_ram=1)
    print("first", next(results), flush=True)
    # the script ends here, holding the rest of the generator
"""


def test_a_script_ending_with_a_half_read_generator_frees_the_node_at_once(leased_agent, tmp_path):
    caller = start_script(tmp_path, HALF_READ_GENERATOR, leased_agent)
    out, err = caller.communicate(timeout=60)
    assert caller.returncode == 0, err
    assert "first 0" in out
    assert "never awaited" not in err, err
    # Ended by the caller at exit, not by the 3 s lease (so it would be freed at once with a 30 s lease too).
    assert not jobs_on(leased_agent), f"the job still holds the node after its caller exited: {jobs_on(leased_agent)}"


CONCURRENT_CALLER = """
    import json, os, sys, time
    from burla import remote_parallel_map

    directory = sys.argv[1]

    def record(key):
        started = time.time()
        time.sleep(0.5)
        with open(os.path.join(directory, f"{key}-{os.getpid()}-{started}"), "w") as handle:
            json.dump([started, time.time()], handle)
        return key

    print(remote_parallel_map(record, [f"{os.getpid()}-{i}" for i in range(3)], spinner=False, func_ram=1))
"""


def test_concurrent_callers_never_push_a_node_past_its_slots(tmp_path):
    (agent,) = start_agents(1, TOKEN, args=("--cpus", "2", "--ram-gb", "8"))
    try:
        script = tmp_path / "caller.py"
        script.write_text(textwrap.dedent(CONCURRENT_CALLER))
        work = tmp_path / "intervals"
        work.mkdir()
        callers = [
            subprocess.Popen([sys.executable, str(script), str(work)], env=caller_env(agent), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for _ in range(3)
        ]
        for caller in callers:
            out, err = caller.communicate(timeout=120)
            assert caller.returncode == 0, err
        intervals = [json.loads(path.read_text()) for path in work.iterdir()]
    finally:
        agent.close()
    assert len(intervals) == 9, f"{len(intervals)} calls recorded, expected 9"
    events = sorted([(start, 1) for start, _ in intervals] + [(end, -1) for _, end in intervals])
    running = peak = 0
    for _, change in events:
        running += change
        peak = max(peak, running)
    assert peak <= 2, f"{peak} calls ran at once on a node with 2 slots, summed over 3 callers"


def numbered(x):
    return x


def test_the_agent_keeps_answering_while_it_hands_a_big_function_to_new_workers(tmp_path):
    """A job whose function is 50 MB starts 8 workers while another job streams results: the
    agent's loop never waits on those pipe writes, so its heartbeats keep flowing and no node is
    declared lost (loss after 2 s here)."""
    (agent,) = start_agents(1, TOKEN, args=("--cpus", "8", "--ram-gb", "64"))
    try:
        env = caller_env(agent)
        env["BURLA_NODE_LOSS_SECONDS"] = "2"
        streamer = subprocess.Popen(
            [sys.executable, "-c", textwrap.dedent("""
                import sys, time
                from burla import remote_parallel_map
                def tick(x):
                    print(f"tick {x}", flush=True)
                    time.sleep(0.01)
                    return x
                out = remote_parallel_map(tick, range(600), spinner=False, func_ram=1, max_parallelism=1)
                assert out == list(range(600))
            """)],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        big = subprocess.Popen(
            [sys.executable, "-c", textwrap.dedent("""
                import os
                from burla import remote_parallel_map
                blob = os.urandom(50 * 1000 * 1000)
                def size(x):
                    return len(blob) + x
                assert remote_parallel_map(size, range(16), spinner=False, func_ram=1) == [len(blob) + x for x in range(16)]
            """)],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        for process in (big, streamer):
            out, err = process.communicate(timeout=180)
            assert process.returncode == 0, err[-3000:]
            assert "was lost" not in err, err[-3000:]
    finally:
        agent.close()
