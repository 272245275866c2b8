"""The node's environment cache, against a real index on 127.0.0.1 and real installers."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time

import pytest

from burla_core.envsync.description import EnvironmentDescription, Requirement
from burla_core.node.environments import EnvironmentBuildFailed, EnvironmentCache
from burla_core.node.installer import blamed_requirement, find_installer, uv_index_arguments

from .conftest import OTHER, PROBE
from .packaging_helpers import offline_install_env


@pytest.fixture
def offline(monkeypatch, package_index, uv_cache):
    """This process's installers see the test index and nothing else."""
    for key in list(os.environ):
        if key.startswith(("PIP_", "UV_")):
            monkeypatch.delenv(key)
    for key, value in offline_install_env(package_index.url, uv_cache).items():
        if key.startswith(("PIP_", "UV_")):
            monkeypatch.setenv(key, value)
    return package_index


def description(*specs: str) -> EnvironmentDescription:
    requirements = tuple(Requirement(*spec.split("==")) for spec in specs)
    return EnvironmentDescription("3.11.0", requirements)


def test_packages_the_agent_has_at_the_same_version_are_not_planned(tmp_path):
    import cloudpickle

    cache = EnvironmentCache(tmp_path)
    assert cache.plan(description(f"cloudpickle=={cloudpickle.__version__}")) is None
    plan = cache.plan(description(f"cloudpickle=={cloudpickle.__version__}", f"{PROBE}==1.0", "msgpack==0.0.1"))
    assert plan is not None
    assert sorted(r.spec() for r in plan.requirements) == [f"{PROBE}==1.0", "msgpack==0.0.1"]
    assert cache.plan(description(f"{PROBE}==2.0")).key != cache.plan(description(f"{PROBE}==1.0")).key


def test_an_environment_is_installed_once_and_then_reused(tmp_path, offline):
    cache = EnvironmentCache(tmp_path)
    plan = cache.plan(description(f"{PROBE}==1.0"))
    installs = []
    lease = cache.acquire(plan, on_install=installs.append)
    assert (lease.path / "bsync_alpha" / "__init__.py").read_text().startswith("VERSION = '1.0'")
    lease.release()
    again = cache.acquire(plan, on_install=installs.append)
    again.release()
    assert len(installs) == 1, "the second acquire installed again"
    assert (cache.builds, cache.reuses) == (1, 1)
    # A new cache object over the same directory (an agent restarted) finds it too.
    restarted = EnvironmentCache(tmp_path)
    restarted.acquire(plan).release()
    assert restarted.builds == 0


def test_two_jobs_arriving_at_once_install_once(tmp_path, offline):
    cache = EnvironmentCache(tmp_path)
    plan = cache.plan(description(f"{PROBE}==1.0", f"{OTHER}==1.0"))
    leases, errors = [], []

    def take():
        try:
            leases.append(cache.acquire(plan))
        except Exception as error:  # pragma: no cover - reported below
            errors.append(error)

    threads = [threading.Thread(target=take) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not errors
    assert len(leases) == 4 and len({lease.path for lease in leases}) == 1
    assert cache.builds == 1, f"{cache.builds} installs for one environment"


ACQUIRE_SCRIPT = textwrap.dedent("""
    import sys
    from burla_core.envsync.description import EnvironmentDescription, Requirement
    from burla_core.node.environments import EnvironmentCache
    cache = EnvironmentCache(sys.argv[1])
    plan = cache.plan(EnvironmentDescription("3.11.0", (Requirement(sys.argv[2], "1.0"),)))
    cache.acquire(plan).release()
    print(cache.builds)
""")


def test_two_agents_sharing_a_cache_install_once(tmp_path, offline):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    processes = [
        subprocess.Popen([sys.executable, "-c", ACQUIRE_SCRIPT, str(tmp_path), PROBE], stdout=subprocess.PIPE, env=env, text=True)
        for _ in range(3)
    ]
    builds = [int(process.communicate(timeout=120)[0].strip() or -1) for process in processes]
    assert all(process.returncode == 0 for process in processes)
    assert sorted(builds) == [0, 0, 1], f"installs per agent: {builds}"


def test_an_install_cut_short_by_a_dead_agent_is_redone(tmp_path, offline):
    cache = EnvironmentCache(tmp_path)
    plan = cache.plan(description(f"{PROBE}==1.0"))
    # An agent that took the build lock, started installing, and was killed.
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import fcntl, os, sys, time
        lock = open({str(tmp_path / 'locks' / f'envs-{plan.key}.build')!r}, "a+b")
        fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
        os.makedirs({str(tmp_path / 'envs' / (plan.key + '.partial') / 'site' / 'half')!r})
        print("locked", flush=True)
        time.sleep(60)
    """)], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "locked"
    waiter = threading.Thread(target=lambda: cache.acquire(plan).release())
    waiter.start()
    time.sleep(0.3)
    assert waiter.is_alive(), "acquire did not wait for the install in progress"
    holder.send_signal(signal.SIGKILL)
    holder.wait(10)
    waiter.join(60)
    assert not waiter.is_alive()
    site = tmp_path / "envs" / plan.key / "site"
    assert (site / "bsync_alpha").is_dir() and not (site / "half").exists()
    assert not (tmp_path / "envs" / (plan.key + ".partial")).exists()
    assert cache.builds == 1


def test_a_missing_package_names_itself_and_the_installer_output(tmp_path, offline):
    cache = EnvironmentCache(tmp_path)
    plan = cache.plan(description(f"{PROBE}==1.0", "bsync-missing==3.1"))
    with pytest.raises(EnvironmentBuildFailed) as raised:
        cache.acquire(plan)
    assert raised.value.requirement == Requirement("bsync-missing", "3.1")
    assert "bsync-missing" in raised.value.output
    assert not list((tmp_path / "envs").iterdir()), "a failed install left a directory behind"


def test_pip_is_the_fallback_installer(tmp_path, offline):
    assert find_installer("pip").kind == "pip"
    cache = EnvironmentCache(tmp_path, installer="pip")
    lease = cache.acquire(cache.plan(description(f"{PROBE}==2.0")))
    assert (lease.path / "bsync_alpha" / "__init__.py").read_text().startswith("VERSION = '2.0'")
    lease.release()
    with pytest.raises(EnvironmentBuildFailed) as raised:
        cache.acquire(cache.plan(description("bsync-missing==3.1")))
    assert raised.value.requirement.name == "bsync-missing"


def test_least_recently_used_environments_go_first_and_never_one_in_use(tmp_path, offline):
    cache = EnvironmentCache(tmp_path, max_bytes=10**9)
    first = cache.plan(description(f"{PROBE}==1.0"))
    second = cache.plan(description(f"{PROBE}==2.0"))
    third = cache.plan(description(f"{OTHER}==1.0"))
    cache.acquire(first).release()
    held = cache.acquire(second)
    cache.max_bytes = 1  # from now on, everything is over the cap
    cache.acquire(third).release()
    kept = {entry["key"] for entry in cache.entries()}
    assert first.key not in kept, "the least recently used environment was not evicted"
    assert second.key in kept, "an environment in use was evicted"
    held.release()
    cache.evict()
    assert {entry["key"] for entry in cache.entries()} == set()
    # An evicted environment is simply installed again when a job needs it.
    cache.max_bytes = 10**9
    lease = cache.acquire(first)
    assert (lease.path / "bsync_alpha").is_dir()
    lease.release()


def test_local_code_is_unpacked_once_per_archive(tmp_path):
    from burla_core.envsync.localcode import CodeBundle
    import hashlib, io, zipfile

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("helpers.py", "X = 1\n")
    data = buffer.getvalue()
    bundle = CodeBundle(hashlib.sha256(data).hexdigest(), ("helpers",), data)
    cache = EnvironmentCache(tmp_path)
    lease = cache.acquire_code(bundle)
    assert (lease.path / "helpers.py").read_text() == "X = 1\n"
    assert cache.acquire_code(bundle).path == lease.path
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("../escape.py", "X = 1\n")
    evil = CodeBundle(hashlib.sha256(buffer.getvalue()).hexdigest(), ("escape",), buffer.getvalue())
    with pytest.raises(EnvironmentBuildFailed, match="outside"):
        cache.acquire_code(evil)
    assert not (tmp_path / "code" / "escape.py").exists()


def test_uv_takes_pips_index_settings_where_its_own_name_none():
    environ = {"PIP_INDEX_URL": "http://127.0.0.1:1/simple", "PIP_EXTRA_INDEX_URL": "http://a/ http://b/", "PIP_FIND_LINKS": "/w"}
    assert uv_index_arguments(environ) == [
        "--index-url", "http://127.0.0.1:1/simple", "--extra-index-url", "http://a/", "--extra-index-url", "http://b/",
        "--find-links", "/w",
    ]
    assert uv_index_arguments(dict(environ, UV_INDEX_URL="http://u/", UV_FIND_LINKS="/u")) == []


def test_the_blamed_package_is_the_one_the_installer_names():
    requirements = [Requirement("numpy", "1.26.0"), Requirement("bsync_alpha", "9.9")]
    uv_output = "× No solution found\n ╰─▶ Because bsync-alpha was not found in the package registry and you require bsync-alpha==9.9, we can conclude"
    assert blamed_requirement(uv_output, requirements).name == "bsync_alpha"
    pip_output = "ERROR: Could not find a version that satisfies the requirement numpy==1.26.0 (from versions: none)"
    assert blamed_requirement(pip_output, requirements).name == "numpy"
    assert blamed_requirement("disk full", requirements) is None
