"""The ray backend's test environment: with RAY_ADDRESS unset, a local Ray head on 127.0.0.1
(`ray start --head --block`, 2 CPUs, no dashboard, no usage stats, a token of its own) in its own
process group, stopped with the test run so that nothing of Ray outlives it."""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from typing import Iterator

from burla_core.hookspecs import TestEnvironment

from .settings import ADDRESS_ENV

TEST_CPUS = 2
START_SECONDS = 180.0
STOP_SECONDS = 20.0
GIB = 2**30


def ray_environment(token: str) -> dict[str, str]:
    """What the head and every process talking to it need: loopback only (Ray otherwise picks the
    machine's outward address), no usage stats, token authentication with this run's token."""
    return {
        "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",  # Ray's switch for "use 127.0.0.1 as the node's address"
        "RAY_USAGE_STATS_ENABLED": "0",
        "RAY_AUTH_MODE": "token",
        "RAY_AUTH_TOKEN": token,
    }


@contextlib.contextmanager
def ray_test_environment() -> Iterator[TestEnvironment]:
    if os.environ.get(ADDRESS_ENV):
        yield TestEnvironment()  # the user's own cluster: use it as configured
        return
    token = secrets.token_hex(24)
    env = ray_environment(token)
    with local_head(env) as address:
        yield TestEnvironment(backend_options={"address": address}, env=env)


@contextlib.contextmanager
def local_head(env: dict[str, str], cpus: int = TEST_CPUS) -> Iterator[str]:
    """A Ray head on 127.0.0.1 with `cpus` CPUs and 4 GiB of Ray memory per CPU (so that
    func_ram=4 gives one slot per CPU on any machine); yields its address."""
    # Short: Ray's unix sockets live under it, and their paths are limited to ~100 characters.
    directory = tempfile.mkdtemp(prefix="burla-ray-", dir="/tmp" if os.path.isdir("/tmp") else None)
    ray_command = os.path.join(os.path.dirname(sys.executable), "ray")
    if not os.path.exists(ray_command):
        ray_command = shutil.which("ray") or "ray"
    log_path = os.path.join(directory, "head.log")
    command = [
        ray_command, "start", "--head", "--block",
        "--node-ip-address=127.0.0.1", "--port=0",
        f"--num-cpus={cpus}", "--num-gpus=0", f"--memory={cpus * 4 * GIB}", f"--object-store-memory={GIB}",
        "--include-dashboard=false", "--disable-usage-stats", f"--temp-dir={directory}",
    ]
    with open(log_path, "wb") as log_file:
        process = subprocess.Popen(
            command, stdin=subprocess.DEVNULL, stdout=log_file, stderr=subprocess.STDOUT,
            env=dict(os.environ, **env), start_new_session=True,
        )
    try:
        yield _wait_for_address(process, directory, log_path)
    finally:
        _stop(process)
        shutil.rmtree(directory, ignore_errors=True)


def _wait_for_address(process: subprocess.Popen, directory: str, log_path: str) -> str:
    address_file = os.path.join(directory, "ray_current_cluster")
    deadline = time.monotonic() + START_SECONDS
    while time.monotonic() < deadline and process.poll() is None:
        try:
            with open(address_file, encoding="utf-8") as handle:
                address = handle.read().strip()
        except OSError:
            address = ""
        if address and _head_ready(log_path):
            return address
        time.sleep(0.1)
    with open(log_path, encoding="utf-8", errors="replace") as handle:
        tail = handle.read()[-3000:]
    raise RuntimeError(f"the test Ray head did not start (status {process.poll()}):\n{tail}")


def _head_ready(log_path: str) -> bool:
    try:
        with open(log_path, encoding="utf-8", errors="replace") as handle:
            return "Ray runtime started" in handle.read()
    except OSError:
        return False


def _stop(process: subprocess.Popen) -> None:
    """SIGTERM: `ray start --block` stops what it started; then SIGKILL to anything of its
    process group still there (workers, their calls)."""
    try:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=STOP_SECONDS)
    except (OSError, subprocess.TimeoutExpired):
        pass
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        pass
