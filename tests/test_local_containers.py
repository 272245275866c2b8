"""Workers in container images (`image=` on the local backend), driven through a stand-in engine.

No engine runs on CI machines, so tests/fake_docker.py stands in for the docker client: it runs
the worker command here as a "container" that outlives its client, can be removed by name and
gets the client's signals. What is tested is how the backend drives an engine and speaks to a
worker over stdio, not the engine."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

import burla
from burla import remote_parallel_map

from .conftest import TESTS_DIR, python_env

IMAGE = "example/image:1"


def rpm(*args, **kwargs):
    kwargs.setdefault("spinner", False)
    return remote_parallel_map(*args, **kwargs)


@pytest.fixture
def fake_engine(monkeypatch, tmp_path):
    """`docker` on PATH is the stand-in; returns its command log."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "docker").symlink_to(TESTS_DIR / "fake_docker.py")
    log = tmp_path / "docker.log"
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_DOCKER_LOG", str(log))
    monkeypatch.setenv("FAKE_DOCKER_STATE", str(tmp_path / "containers"))
    monkeypatch.setenv("FAKE_DOCKER_PYTHON", sys.executable)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(sys.path))
    return log


def process_gone(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except (OSError, IndexError):
        return True


def wait_gone(pid: int, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process_gone(pid):
            return True
        time.sleep(0.05)
    return False


def wait_removed(log: Path, name: str, seconds: float) -> bool:
    """True once the log shows `rm -f NAME`."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if f"rm -f {name}" in log.read_text().splitlines():
            return True
        time.sleep(0.05)
    return False


def test_image_without_a_container_engine_fails_at_once(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))  # no docker, no podman
    with pytest.raises(burla.ContainerEngineMissing, match="docker or podman"):
        rpm(abs, [1], image="python:3.11")


def test_image_runs_workers_through_the_container_engine(fake_engine, capfd):
    """Workers are `docker run -i --name burla-... IMAGE python -m burla_core.worker --stdio`."""

    def square(x):
        print(f"squaring {x}")
        os.write(2, f"fd 2 of {x}\n".encode())
        return x * x

    capfd.readouterr()
    assert rpm(square, range(5), image=IMAGE, func_ram=1) == [0, 1, 4, 9, 16]
    captured = capfd.readouterr()
    assert sorted(line for line in captured.out.splitlines() if line.startswith("squaring")) == [f"squaring {x}" for x in range(5)]
    assert sorted(line for line in captured.err.splitlines() if line.startswith("fd 2")) == [f"fd 2 of {x}" for x in range(5)]
    commands = fake_engine.read_text().splitlines()
    runs = [c for c in commands if c.startswith("run ")]
    assert runs and all(f"{IMAGE} python -m burla_core.worker --stdio" in c for c in runs), commands
    assert all("--memory 1g" in c for c in runs), f"func_ram must become the container's memory limit: {runs}"
    assert all(" --name burla-worker-" in c for c in runs), f"each container must be named, to be removable: {runs}"

    marker_dir = str(fake_engine.parent)

    def die_once(x):
        import os as o

        marker = o.path.join(marker_dir, f"{x}.died")
        if not o.path.exists(marker):
            open(marker, "w").close()
            o._exit(3)
        return x

    assert rpm(die_once, [7], image=IMAGE, func_ram=1) == [7]


def test_a_call_stuck_in_a_container_is_removed_with_its_container_when_canceled(fake_engine, tmp_path):
    pid_file = str(tmp_path / "stuck.pid")

    def stuck_or_fail(x):
        import os as o
        import time as t

        if x == 0:
            with open(pid_file + ".tmp", "w") as f:
                f.write(f"{o.getpid()} {o.environ['FAKE_DOCKER_CONTAINER']}")
            o.replace(pid_file + ".tmp", pid_file)
            while True:  # ignores the cancel: stuck, as in C code
                try:
                    t.sleep(60)
                except BaseException:
                    pass
        deadline = t.monotonic() + 30
        while not o.path.exists(pid_file) and t.monotonic() < deadline:
            t.sleep(0.01)
        raise ValueError("input 1 fails, which cancels input 0")

    with pytest.raises(ValueError, match="cancels input 0"):
        rpm(stuck_or_fail, [0, 1], image=IMAGE, func_ram=1, max_parallelism=2)
    pid, name = Path(pid_file).read_text().split()
    pid = int(pid)
    assert name.startswith("burla-worker-"), f"containers are named burla-worker-...: {name!r}"
    assert wait_removed(fake_engine, name, 15), (
        f"the canceled call ignored its cancel and was killed; its container must be removed by name "
        f"(`docker rm -f NAME`), not only its `docker run` client killed. Engine commands:\n{fake_engine.read_text()}"
    )
    assert wait_gone(pid, 15), f"the container's process {pid} still runs after `docker rm -f`"


CALLER_EXITS = """
import os, sys, time
from burla import remote_parallel_map

def stuck(path):
    with open(path + ".tmp", "w") as f:
        f.write(f"{os.getpid()} {os.environ['FAKE_DOCKER_CONTAINER']}")
    os.replace(path + ".tmp", path)
    while True:
        try:
            time.sleep(60)
        except BaseException:
            pass

results = remote_parallel_map(stuck, [sys.argv[1]], image="example/image:1", func_ram=1, spinner=False, generator=True)
deadline = time.monotonic() + 30
while not os.path.exists(sys.argv[1]) and time.monotonic() < deadline:
    time.sleep(0.05)
# ... and the script ends, its call still running.
"""


def test_a_caller_that_exits_removes_the_containers_of_its_running_calls(fake_engine, tmp_path):
    script = tmp_path / "caller.py"
    script.write_text(CALLER_EXITS)
    pid_file = tmp_path / "stuck.pid"
    caller = subprocess.Popen([sys.executable, str(script), str(pid_file)], env=python_env())
    try:
        deadline = time.monotonic() + 30
        while not pid_file.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert pid_file.exists(), "the call in the container never started"
        pid, name = pid_file.read_text().split()
        pid = int(pid)
        assert caller.wait(30) == 0, "the caller should exit normally once its call has started"
    finally:
        caller.kill()
    assert wait_removed(fake_engine, name, 15), (
        f"the caller exited while a call ran in a container; the container must be removed by name. "
        f"Engine commands:\n{fake_engine.read_text()}"
    )
    assert wait_gone(pid, 15), f"the container's process {pid} outlived its caller"


def test_a_line_flushed_just_before_a_container_worker_exits_reaches_the_caller(fake_engine, capfd):
    """A worker that reads its own output (in a container, or in a node's job environment) sends
    what a flush wrote before the flush returns: a line printed with flush=True right before
    os._exit arrives, as it does in plain Python."""

    def last_words(x):
        import os as o

        print(f"last words of {x}", flush=True)
        o._exit(5)

    capfd.readouterr()
    with pytest.raises(burla.WorkerDied):
        rpm(last_words, [1], image=IMAGE, func_ram=1)
    out = capfd.readouterr().out
    assert "last words of 1" in out, f"the line flushed before the worker exited was lost: {out!r}"
