"""The dask and ray backends: the whole conformance suite and tests/engine_checks.py against a
local cluster each (started by the backend's test environment on 127.0.0.1), and what holds
without any cluster: a missing address fails at once, and nothing of dask or ray is imported
unless the backend is used."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

import burla
from burla_core.errors import NoNodes

REPO = Path(__file__).resolve().parent.parent
ADDRESS_ENVS = {"dask": "BURLA_DASK_ADDRESS", "ray": "RAY_ADDRESS"}
ENGINE_MODULES = {"dask": "distributed", "ray": "ray"}  # what each backend's extra installs


@pytest.mark.parametrize("engine", ["dask", "ray"])
def test_no_address_fails_at_once_saying_how_to_give_one(engine, monkeypatch):
    pytest.importorskip(ENGINE_MODULES[engine])
    monkeypatch.delenv(ADDRESS_ENVS[engine], raising=False)
    started = time.monotonic()
    with pytest.raises(NoNodes) as raised:
        burla.remote_parallel_map(abs, [1], backend=engine, spinner=False)
    message = str(raised.value)
    assert ADDRESS_ENVS[engine] in message and "backend_options={'address'" in message, (
        f"the error should say both ways to give the address: {message}"
    )
    assert time.monotonic() - started < 30, "a missing address must fail at once, not after trying to connect"


def test_burla_and_the_local_backend_never_import_dask_or_ray():
    script = (
        "import sys, burla\n"
        "assert burla.remote_parallel_map(abs, [-1, -2], spinner=False) == [1, 2]\n"
        "from burla_core import plugins\n"
        "assert {'dask', 'ray'} <= set(plugins.installed_backends()), plugins.installed_backends()\n"
        "loaded = sorted(name for name in ('dask', 'distributed', 'ray') if name in sys.modules)\n"
        "print('LOADED', loaded)\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, cwd=REPO)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "LOADED []" in result.stdout, f"import burla or a local call loaded an engine: {result.stdout}"


def _suite_command(engine: str) -> list[str]:
    return [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "-x", "--pyargs", "conformance_tests",
            str(REPO / "tests" / "engine_checks.py"), "--burla-backend", engine, "--timeout", "150"]


@pytest.fixture(scope="module")
def suite_runs():
    """Both engines' suites, started together: most of either's time is waiting (a cluster
    starting, calls that sleep), so side by side they take little more than the longer one
    alone (Ray's), where one after the other they took the sum."""
    env = dict(os.environ)
    for name in (*ADDRESS_ENVS.values(), "BURLA_BACKEND"):
        env.pop(name, None)  # the backend's test environment starts its own cluster on 127.0.0.1
    runs = {}
    for engine, module in ENGINE_MODULES.items():
        if importlib.util.find_spec(module) is None:
            continue  # its test skips
        # Files, not pipes: a suite that prints a lot while the other is awaited never blocks.
        output = tempfile.TemporaryFile("w+")
        process = subprocess.Popen(_suite_command(engine), stdout=output, stderr=subprocess.STDOUT, text=True, env=env, cwd=REPO)
        runs[engine] = (process, output, time.monotonic())
    yield runs
    for process, output, _ in runs.values():
        if process.poll() is None:
            process.kill()
            process.wait()
        output.close()


@pytest.mark.parametrize("engine", ["dask", "ray"])
def test_the_conformance_suite_and_engine_checks_pass_against_a_local_cluster(engine, suite_runs):
    pytest.importorskip(ENGINE_MODULES[engine])
    process, output, started = suite_runs[engine]
    try:
        process.wait(timeout=900)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
    output.seek(0)
    printed = output.read()
    took = time.monotonic() - started
    print(f"{engine}: conformance suite + engine checks took {took:.0f} s (beside the other engine's)")
    assert process.returncode == 0, f"{engine}: the suite failed (or ran over 900 s):\n{printed[-9000:]}"
    # What the test environment started runs under a name of its own: none of it may be left.
    marker = "burla_backend_dask.testenv" if engine == "dask" else "/burla-ray-"
    leftovers = [line for line in subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout.splitlines() if marker in line]
    assert not leftovers, f"processes of the test cluster outlived the run: {leftovers[:5]}"
