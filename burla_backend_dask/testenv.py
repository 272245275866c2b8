"""The dask backend's test environment: with BURLA_DASK_ADDRESS unset, a `LocalCluster` on
127.0.0.1 (2 worker processes x 1 thread, no dashboard) in a subprocess of the test run, stopped
with it. `python -m burla_backend_dask.testenv` is that subprocess: it prints the scheduler's
address and runs the cluster until its stdin closes."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
from typing import Iterator

from burla_core.hookspecs import TestEnvironment

from .settings import ADDRESS_ENV

TEST_WORKERS = 2
START_SECONDS = 120.0
ADDRESS_PREFIX = "BURLA-DASK-ADDRESS "


@contextlib.contextmanager
def dask_test_environment() -> Iterator[TestEnvironment]:
    if os.environ.get(ADDRESS_ENV):
        yield TestEnvironment()  # the user's own cluster: use it as configured
        return
    with local_cluster() as address:
        yield TestEnvironment(backend_options={"address": address})


@contextlib.contextmanager
def local_cluster(workers: int = TEST_WORKERS, threads: int = 1) -> Iterator[str]:
    """A LocalCluster in a child process (its own process group, so that nothing of it
    outlives this context); yields the scheduler's address."""
    with tempfile.TemporaryDirectory(prefix="burla-dask-test-") as directory:
        log_path = os.path.join(directory, "cluster.log")
        with open(log_path, "wb") as log_file:
            process = subprocess.Popen(
                [sys.executable, "-m", "burla_backend_dask.testenv", str(workers), str(threads), directory],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=log_file,
                start_new_session=True,
            )
        try:
            address = _read_address(process, log_path)
            yield address
        finally:
            _stop(process)


def _read_address(process: subprocess.Popen, log_path: str) -> str:
    deadline = time.monotonic() + START_SECONDS
    while time.monotonic() < deadline:
        line = process.stdout.readline().decode("utf-8", "replace")
        if line.startswith(ADDRESS_PREFIX):
            return line[len(ADDRESS_PREFIX):].strip()
        if not line and process.poll() is not None:
            break
    with open(log_path, encoding="utf-8", errors="replace") as handle:
        tail = handle.read()[-3000:]
    raise RuntimeError(f"the test Dask cluster did not start (status {process.poll()}):\n{tail}")


def _stop(process: subprocess.Popen) -> None:
    try:
        process.stdin.close()  # the cluster closes itself when its stdin ends
        process.wait(timeout=15)
    except (OSError, subprocess.TimeoutExpired):
        pass
    try:
        os.killpg(process.pid, signal.SIGKILL)  # anything of it still there: its workers, their calls
    except (ProcessLookupError, PermissionError):
        pass
    process.wait(timeout=10)


def _serve(workers: int, threads: int, directory: str) -> None:
    import dask
    from distributed import LocalCluster

    dask.config.set({"distributed.worker.daemon": False, "temporary-directory": directory})
    with LocalCluster(
        n_workers=workers,
        threads_per_worker=threads,
        processes=True,
        host="127.0.0.1",
        dashboard_address=None,
        memory_limit="8GiB",  # a limit, not a reservation: func_ram=4 fits on any test machine
    ) as cluster:
        sys.stdout.write(f"{ADDRESS_PREFIX}{cluster.scheduler_address}\n")
        sys.stdout.flush()
        sys.stdin.read()  # until the test run closes it (or dies)


if __name__ == "__main__":
    _serve(int(sys.argv[1]), int(sys.argv[2]), sys.argv[3])
