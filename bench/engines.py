"""The dask and ray backends against the engines' own APIs, on the same local cluster in the same
run: every figure measured here, on this machine.

    python bench/engines.py            # both engines (a few minutes: native Dask's 10,000 tasks dominate)
    python bench/engines.py --quick    # one repetition of each figure, same targets
    python bench/engines.py --check    # exit 1 when a target fails
    python bench/engines.py --engine ray

Each engine gets one cluster, started the way the test environments start theirs (Dask: a
LocalCluster of 2 worker processes x 1 thread; Ray: a head with 2 CPUs, both on 127.0.0.1), and
one caller process that connects to it once. Every system runs once untimed first (so that
imports, connections and worker processes are warm), then each figure is the best of a few
repetitions. Ratios are the native time over Burla's.

Targets (issue 11):
  dask noop_10000   10,000 no-ops through backend="dask"   >= 10x faster than client.map + gather
  ray  noop_10000   10,000 no-ops through backend="ray"    >= 5x faster than ray.get([f.remote(x) ...])
  sleep_1000        1,000 inputs sleeping 10 ms on 2 slots  within 5% of the ideal 5.0 s, on both
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

NOOP_INPUTS = 10_000
SLEEP_INPUTS, SLEEP_SECONDS, SLOTS = 1_000, 0.010, 2
IDEAL_SLEEP_SECONDS = SLEEP_INPUTS * SLEEP_SECONDS / SLOTS
MIN_FACTOR = {"dask": 10.0, "ray": 5.0}
MAX_SLEEP_OVERHEAD = 0.05


def noop(x):
    return x


def nap(x):
    time.sleep(SLEEP_SECONDS)
    return x


def best_of(repeats: int, run) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        run()
        times.append(time.perf_counter() - started)
    return min(times)


# --- the caller process of one engine ------------------------------------------------------------


def measure(engine: str, address: str, repeats: int) -> dict:
    from burla import remote_parallel_map

    options = {"address": address}

    def burla_map(function, count: int) -> None:
        results = remote_parallel_map(function, list(range(count)), spinner=False, backend=engine, backend_options=options)
        assert results == list(range(count))

    if engine == "dask":
        from distributed import Client

        client = Client(address, set_as_default=False)

        def native_noops() -> None:
            futures = client.map(noop, range(NOOP_INPUTS), pure=False)
            assert client.gather(futures) == list(range(NOOP_INPUTS))
            del futures

        native_warm = lambda: client.gather(client.map(noop, range(20), pure=False))  # noqa: E731
        native_name = "client.map + gather"
    else:
        import ray

        from burla_backend_ray.connection import connect

        connect(address)
        remote_noop = ray.remote(noop)

        def native_noops() -> None:
            assert ray.get([remote_noop.remote(x) for x in range(NOOP_INPUTS)]) == list(range(NOOP_INPUTS))

        native_warm = lambda: ray.get([remote_noop.remote(x) for x in range(20)])  # noqa: E731
        native_name = "ray.get([f.remote(x) ...])"

    native_warm()
    burla_map(noop, 20)
    burla_map(nap, 4)
    native = best_of(1 if repeats == 1 else 2, native_noops)  # native 10,000 is slow: fewer repetitions
    ours = best_of(repeats, lambda: burla_map(noop, NOOP_INPUTS))
    sleep = best_of(repeats, lambda: burla_map(nap, SLEEP_INPUTS))
    return {"native_name": native_name, "native_noop_s": native, "burla_noop_s": ours, "burla_sleep_s": sleep}


# --- the parent: clusters, children, report ---------------------------------------------------------


def run_engine(engine: str, repeats: int) -> dict:
    env = dict(os.environ)
    if engine == "dask":
        from burla_backend_dask.testenv import local_cluster

        cluster = local_cluster(workers=SLOTS, threads=1)
    else:
        import secrets

        from burla_backend_ray.testenv import local_head, ray_environment

        ray_env = ray_environment(secrets.token_hex(24))
        env.update(ray_env)
        cluster = local_head(ray_env, cpus=SLOTS)
    with cluster as address:
        child = subprocess.run(
            [sys.executable, __file__, "--child", engine, address, str(repeats)],
            capture_output=True, text=True, env=env, timeout=1800,
        )
    if child.returncode != 0:
        raise SystemExit(f"the {engine} measurements failed:\n{child.stdout[-3000:]}\n{child.stderr[-3000:]}")
    return json.loads(child.stdout.strip().splitlines()[-1])


def report(engine: str, figures: dict) -> list[str]:
    failures = []
    factor = figures["native_noop_s"] / figures["burla_noop_s"]
    overhead = figures["burla_sleep_s"] / IDEAL_SLEEP_SECONDS - 1
    print(f"\n{engine}")
    print(f"  noop_10000  native {figures['native_name']}: {figures['native_noop_s']:.2f} s "
          f"({figures['native_noop_s'] / NOOP_INPUTS * 1e3:.2f} ms/input)")
    print(f"              burla backend={engine!r}: {figures['burla_noop_s']:.3f} s "
          f"({NOOP_INPUTS / figures['burla_noop_s']:,.0f} inputs/s)")
    verdict = "ok" if factor >= MIN_FACTOR[engine] else "FAIL"
    print(f"              ratio native/burla: {factor:.1f}x  (target >= {MIN_FACTOR[engine]:.0f}x)  {verdict}")
    if verdict != "ok":
        failures.append(f"{engine} noop_10000: {factor:.1f}x < {MIN_FACTOR[engine]:.0f}x")
    verdict = "ok" if overhead <= MAX_SLEEP_OVERHEAD else "FAIL"
    print(f"  sleep_1000  {SLEEP_INPUTS} x {SLEEP_SECONDS * 1e3:.0f} ms on {SLOTS} slots: {figures['burla_sleep_s']:.2f} s "
          f"(ideal {IDEAL_SLEEP_SECONDS:.1f} s, {overhead * 100:+.1f}%; target within {MAX_SLEEP_OVERHEAD * 100:.0f}%)  {verdict}")
    if verdict != "ok":
        failures.append(f"{engine} sleep_1000: {overhead * 100:+.1f}% over the ideal")
    return failures


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        engine, address, repeats = sys.argv[2], sys.argv[3], int(sys.argv[4])
        print(json.dumps(measure(engine, address, repeats)))
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="one repetition of each figure")
    parser.add_argument("--check", action="store_true", help="exit 1 when a target fails")
    parser.add_argument("--engine", choices=("dask", "ray"), action="append", help="only this engine (repeatable)")
    args = parser.parse_args()
    print(f"bench/engines.py on {platform.node()}: {os.cpu_count()} CPUs, Python {platform.python_version()}")
    failures = []
    for engine in args.engine or ["dask", "ray"]:
        failures += report(engine, run_engine(engine, 1 if args.quick else 3))
    if failures:
        print("\ntargets failed: " + "; ".join(failures))
    if args.check and failures:
        sys.exit(1)


if __name__ == "__main__":
    main()
