"""The `nodes` backend (node agents over HTTP on 127.0.0.1) against the local backend and Dask,
every figure measured in this run on this machine.

    python bench/nodes.py            # the full run (about a minute; Dask's 10,000 no-ops dominate)
    python bench/nodes.py --quick    # fewer repetitions, same figures and targets
    python bench/nodes.py --check    # exit 1 when a target fails

The parent starts the node agents (`burla node start`, one process each, on loopback ports) and
runs each measurement in a fresh child Python, so that one system's warm processes or memory
never colour another's figure. "Warm agents": the agents have run a job before the clock starts,
so their worker processes exist. "Cold caller": the first call of a fresh caller process (its
HTTP client, event-loop thread and connections start inside the timed call); "warm caller": a
later call of the same process. Imports happen before the clock for every system. Each figure is
the best of a few repetitions. Ratios are the nodes backend's time over the peer's.

Targets (from the issue that asked for this benchmark):
  print_1000   1,000 print-only inputs on 4 warm node agents, end to end    < 1 s
  noop_10000   10,000 no-ops over 2 node agents                             >= 5,000 inputs/s, >= 10x Dask
  bytes_100MB  one 100 MB input and its 100 MB result, round trip, 1 agent   >= 400 MB/s (200 MB moved / time)
  scheduler    in-memory transport, 10,000 slots, 1,000,000 inputs          < 10 us caller CPU per input,
                                                                            RSS rise at 2M inputs < 1.25x at 1M
  env_sync     a caller with 20 packages the agent lacks, from a 127.0.0.1   first job: printed;
               index: the job's time over the same job with sync off         second job: < 50 ms more

The 100 MB line also gives the rate of multiprocessing's Pool and ProcessPoolExecutor on this
machine (and of Ray, where it is installed), measured by bench/local.py's child in this run.
Without Dask installed (`pip install -e '.[bench]'`), the Dask figures are left out, saying so.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import secrets
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
SCRIPT = os.path.abspath(__file__)
LOCAL_SCRIPT = os.path.join(HERE, "local.py")

from _harness import importable, in_child, serve_child  # noqa: E402

PRINT_INPUTS = 1_000
NOOP_INPUTS = 10_000
BIG_BYTES = 100 * 1000 * 1000
SCHEDULER_NODES, SCHEDULER_SLOTS_PER_NODE = 100, 100
SCHEDULER_INPUTS = 1_000_000

PRINT_MAX_SECONDS = 1.0
NOOP_MIN_RATE = 5_000
NOOP_MIN_DASK_FACTOR = 10
BYTES_MIN_MB_S = 400
SCHEDULER_MAX_US = 10.0
SCHEDULER_MAX_MEMORY_GROWTH = 1.25  # RSS rise at 2M inputs / RSS rise at 1M inputs
SYNC_PACKAGES = 20
SYNC_SECOND_JOB_MAX_MS = 50.0


def noop(x):
    return x


def echo(data):
    return data


# --- children ----------------------------------------------------------------------------------


def _quiet_stdout():
    sys.stdout.flush()
    saved = sys.stdout
    sys.stdout = open(os.devnull, "w")
    return saved


def _burla_call(backend: str, function, inputs: list):
    from burla import remote_parallel_map

    return remote_parallel_map(function, inputs, spinner=False, backend=backend)


def child_burla(backend: str, job: str, repeats: int) -> dict:
    import burla  # noqa: F401
    from burla_core import api, plugins, scheduler  # noqa: F401

    if backend == "nodes":
        from burla_core.node import client  # noqa: F401

    if job == "print":
        function, inputs = print, list(range(PRINT_INPUTS))
    elif job == "noop":
        function, inputs = noop, list(range(NOOP_INPUTS))
    else:
        function, inputs = echo, [os.urandom(BIG_BYTES)]
    times = []
    for _ in range(repeats + 1):
        saved = _quiet_stdout()
        started = time.perf_counter()
        results = _burla_call(backend, function, inputs)
        elapsed = time.perf_counter() - started
        sys.stdout = saved
        times.append(elapsed)
        if job == "noop" and results != inputs:
            raise SystemExit("noop: wrong results")
        if job == "bytes" and results[0] != inputs[0]:
            raise SystemExit("bytes: the result differs from the input")
    return {"cold": times[0], "warm": min(times[1:] or times)}


def child_dask(job: str, repeats: int) -> dict:
    import logging

    from distributed import Client, LocalCluster

    cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None, silence_logs=logging.ERROR)
    client = Client(cluster)
    try:
        client.gather(client.map(noop, list(range(100)), pure=False))  # warm
        if job == "print":
            function, inputs = print, list(range(PRINT_INPUTS))
        elif job == "noop":
            function, inputs = noop, list(range(NOOP_INPUTS))
        else:
            function, inputs = echo, [os.urandom(BIG_BYTES)]
        times = []
        for _ in range(repeats):
            started = time.perf_counter()
            client.gather(client.map(function, inputs, pure=False))
            times.append(time.perf_counter() - started)
        return {"warm": min(times)}
    finally:
        client.close()
        cluster.close()


def child_scheduler(inputs: int) -> dict:
    """The default scheduler alone: a transport that answers every batch at once, in memory."""
    from burla_core.interfaces import NodeSession, Provisioner, Transport
    from burla_core.scheduler import DefaultScheduler
    from burla_core.serialization import dumps_function
    from burla_core.types import RESULTS, JobSpec, NodeInfo, ResourceRequest

    class ManyNodes(Provisioner):
        def eligible_nodes(self, request):
            return [NodeInfo(f"node{i}", SCHEDULER_SLOTS_PER_NODE, 400.0, slots=SCHEDULER_SLOTS_PER_NODE) for i in range(SCHEDULER_NODES)]

    class InstantSession(NodeSession):
        def __init__(self, node, slots, events):
            self.node_id, self.slots, self.put = node.node_id, slots, events.put

        def submit(self, batch):
            self.put([RESULTS, self.node_id, [(index, b"N.") for index, _ in batch.items]])

        def cancel(self):
            pass

        def close(self):
            pass

    class InMemoryTransport(Transport):
        def open_session(self, node, job, slots, events):
            return InstantSession(node, slots, events)

    job = JobSpec("bench", dumps_function(noop), "noop", ResourceRequest())
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    cpu_started = time.process_time()
    done = 0
    for event in DefaultScheduler().run(job, enumerate(range(inputs)), inputs, ManyNodes(), InMemoryTransport()):
        if event[0] == RESULTS:
            done += len(event[2])
    cpu = time.process_time() - cpu_started
    if done != inputs:
        raise SystemExit(f"scheduler: {done} results for {inputs} inputs")
    rss_after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return {"cpu_us_per_input": cpu / inputs * 1e6, "rss_rise_mb": (rss_after - rss_before) / 1e6}


CHILD_TASKS = {"burla": child_burla, "dask": child_dask, "scheduler": child_scheduler}


# --- the parent ----------------------------------------------------------------------------------


def run_child(task: str, *args, env: dict | None = None) -> dict:
    return in_child(SCRIPT, task, *args, env=env)


def nodes_env(agents, token: str) -> dict:
    return dict(os.environ, BURLA_NODES=",".join(a.url for a in agents), BURLA_NODE_TOKEN=token)


def verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def run_on_warm_agents(count: int, token: str, *args) -> dict:
    """Start `count` agents, warm their workers with one call, run task `args` against them, stop them."""
    from burla_core.node.testing import start_agents

    agents = start_agents(count, token)
    try:
        run_child("burla", "nodes", "noop", 0, env=nodes_env(agents, token))
        return run_child(*args, env=nodes_env(agents, token))
    finally:
        for agent in agents:
            agent.close()


SYNC_CALLER = """
import json, sys, time
from burla import remote_parallel_map

def noop(x):
    return x

def timed(options):
    started = time.perf_counter()
    remote_parallel_map(noop, list(range(4)), spinner=False, backend="nodes", backend_options=options)
    return time.perf_counter() - started

repeats = int(sys.argv[1])
off = [timed({"sync_packages": False}) for _ in range(repeats)]  # also warms the caller's client
first = timed({})
second = [timed({}) for _ in range(repeats)]
off += [timed({"sync_packages": False}) for _ in range(repeats)]
print("RESULT " + json.dumps({"off": min(off), "first": first, "second": min(second)}))
"""


def bench_env_sync(token: str, repeats: int) -> dict:
    """A caller venv with SYNC_PACKAGES packages the agent's bare venv lacks, all served by an
    index on 127.0.0.1; the same no-op job with sync off, on a cold cache, and again."""
    import tempfile
    from pathlib import Path

    sys.path.insert(0, os.path.dirname(HERE))
    from tests.envsync.packaging_helpers import (
        IndexServer, VenvAgent, bare_venv, dependency_farm, install_into, offline_install_env, probe_wheel,
    )

    with tempfile.TemporaryDirectory(prefix="burla-bench-sync-") as scratch:
        root = Path(scratch)
        names = [f"bench-sync-{number:02d}" for number in range(SYNC_PACKAGES)]
        for name in names:
            probe_wheel(root / "wheels", name, "1.0")
        index = IndexServer(root / "wheels")
        try:
            farm = dependency_farm(root / "farm")
            agent_python = bare_venv(root / "agent-venv", farm)
            caller_python = bare_venv(root / "caller-venv", farm)
            install_into(caller_python, [f"{name}==1.0" for name in names], index.url, root / "uv-cache")
            (root / "agent-home").mkdir()
            env = offline_install_env(index.url, root / "uv-cache")
            agent = VenvAgent(agent_python, token, ("--env-cache", str(root / "envs")), env, root / "agent-home").start(60)
            try:
                caller_env = dict(env, BURLA_NODES=agent.url, BURLA_NODE_TOKEN=token)
                completed = subprocess.run(
                    [str(caller_python), "-c", SYNC_CALLER, str(repeats)], capture_output=True, text=True,
                    env=caller_env, cwd=root, timeout=600,
                )
            finally:
                agent.close()
        finally:
            index.close()
    for line in completed.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT "):])
    raise SystemExit(f"the env_sync caller failed ({completed.returncode}):\n{completed.stderr[-4000:]}")


def main() -> int:
    if serve_child(CHILD_TASKS):
        return 0
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--check", action="store_true")
    parser.add_argument("--skip-dask", action="store_true", help="leave out Dask (no ratio against it)")
    options = parser.parse_args()

    repeats = 2 if options.quick else 4
    token = secrets.token_urlsafe(24)
    failures: list[str] = []
    print(f"# bench/nodes.py: {platform.python_version()} on {os.cpu_count()} CPUs, {platform.machine()}; nodes on 127.0.0.1")
    use_dask = not options.skip_dask and importable("distributed")
    if not use_dask:
        why = "--skip-dask" if options.skip_dask else "Dask is not installed; pip install -e '.[bench]' to compare with it"
        print(f"# Dask figures left out ({why})")

    # 1. the scheduler alone
    measured = run_child("scheduler", SCHEDULER_INPUTS)
    doubled = run_child("scheduler", 2 * SCHEDULER_INPUTS)
    growth = doubled["rss_rise_mb"] / max(measured["rss_rise_mb"], 1.0)
    ok = measured["cpu_us_per_input"] < SCHEDULER_MAX_US and growth < SCHEDULER_MAX_MEMORY_GROWTH
    failures += [] if ok else ["scheduler"]
    print(
        f"scheduler    in-memory transport, {SCHEDULER_NODES * SCHEDULER_SLOTS_PER_NODE:,} slots, {SCHEDULER_INPUTS:,} inputs: "
        f"{measured['cpu_us_per_input']:.2f} us caller CPU/input; RSS rise {measured['rss_rise_mb']:.0f} MB at "
        f"{SCHEDULER_INPUTS:,} inputs, {doubled['rss_rise_mb']:.0f} MB at {2 * SCHEDULER_INPUTS:,} (x{growth:.2f})  "
        f"target < {SCHEDULER_MAX_US:.0f} us, flat memory: {verdict(ok)}"
    )

    # 2. 1,000 print-only inputs on 4 warm agents
    nodes = run_on_warm_agents(4, token, "burla", "nodes", "print", repeats)
    local = run_child("burla", "local", "print", repeats)
    dask = run_child("dask", "print", repeats) if use_dask else None
    ok = nodes["cold"] < PRINT_MAX_SECONDS and nodes["warm"] < PRINT_MAX_SECONDS
    failures += [] if ok else ["print_1000"]
    dask_text = "" if dask is None else f"; dask {dask['warm']:.3f} s (ratio {nodes['warm'] / dask['warm']:.2f})"
    print(
        f"print_1000   4 warm agents: cold caller {nodes['cold']:.3f} s, warm caller {nodes['warm']:.3f} s; "
        f"local {local['warm']:.3f} s (ratio {nodes['warm'] / local['warm']:.2f}){dask_text}  "
        f"target < {PRINT_MAX_SECONDS:.0f} s: {verdict(ok)}"
    )

    # 3. 10,000 no-ops over 2 agents
    nodes = run_on_warm_agents(2, token, "burla", "nodes", "noop", repeats)
    local = run_child("burla", "local", "noop", repeats)
    dask = run_child("dask", "noop", 1) if use_dask else None
    rate = NOOP_INPUTS / nodes["warm"]
    dask_rate = None if dask is None else NOOP_INPUTS / dask["warm"]
    ok = rate >= NOOP_MIN_RATE and (dask_rate is None or rate >= NOOP_MIN_DASK_FACTOR * dask_rate)
    failures += [] if ok else ["noop_10000"]
    dask_text = "" if dask is None else f"; dask {dask_rate:,.0f}/s (nodes x{rate / dask_rate:.1f})"
    print(
        f"noop_10000   2 agents: {rate:,.0f} inputs/s warm ({nodes['warm']:.3f} s; cold caller {nodes['cold']:.3f} s); "
        f"local {NOOP_INPUTS / local['warm']:,.0f}/s (ratio {nodes['warm'] / local['warm']:.2f}){dask_text}  "
        f"target >= {NOOP_MIN_RATE:,}/s and >= {NOOP_MIN_DASK_FACTOR}x dask: {verdict(ok)}"
    )

    # 4. one 100 MB input and its 100 MB result
    big_repeats = repeats + 1  # warm calls; the best one counts (this machine is noisy)
    nodes = run_on_warm_agents(1, token, "burla", "nodes", "bytes", big_repeats)
    local = run_child("burla", "local", "bytes", big_repeats)
    dask = run_child("dask", "bytes", big_repeats) if use_dask else None
    peers = {"Pool(2)": "pool", "ProcessPoolExecutor(2)": "ppe"}
    if importable("ray"):
        peers["Ray"] = "ray"
    peer_rates = {label: in_child(LOCAL_SCRIPT, "big", system, "bytes", big_repeats)["mb_s"] for label, system in peers.items()}
    moved = 2 * BIG_BYTES / 1e6
    speed = moved / nodes["warm"]
    ok = speed >= BYTES_MIN_MB_S
    failures += [] if ok else ["bytes_100MB"]
    dask_text = "" if dask is None else f"; dask {dask['warm']:.3f} s (ratio {nodes['warm'] / dask['warm']:.2f})"
    peer_text = "; ".join(f"{label} {rate:,.0f} MB/s (nodes x{speed / rate:.2f})" for label, rate in peer_rates.items())
    print(
        f"bytes_100MB  1 agent: round trip {nodes['warm']:.3f} s = {speed:,.0f} MB/s moved "
        f"({BIG_BYTES / 1e6 / nodes['warm']:,.0f} MB/s of payload); local {local['warm']:.3f} s "
        f"(ratio {nodes['warm'] / local['warm']:.2f}){dask_text}; on one machine: {peer_text}"
        f"{'' if 'Ray' in peer_rates else ' (Ray not installed)'}  target >= {BYTES_MIN_MB_S} MB/s: {verdict(ok)}"
    )

    # 5. environment sync: 20 packages from a local index
    sync = bench_env_sync(token, repeats)
    first_ms = (sync["first"] - sync["off"]) * 1000
    second_ms = (sync["second"] - sync["off"]) * 1000
    ok = second_ms < SYNC_SECOND_JOB_MAX_MS
    failures += [] if ok else ["env_sync"]
    print(
        f"env_sync     {SYNC_PACKAGES} packages: sync off {sync['off'] * 1000:.0f} ms; first job {sync['first'] * 1000:.0f} ms "
        f"(+{first_ms:.0f} ms: install and new workers); second job {sync['second'] * 1000:.0f} ms (+{second_ms:.0f} ms)  "
        f"target second < +{SYNC_SECOND_JOB_MAX_MS:.0f} ms: {verdict(ok)}"
    )

    if failures:
        print(f"# targets missed: {', '.join(failures)}")
    return 1 if (failures and options.check) else 0


if __name__ == "__main__":
    sys.exit(main())
