"""Workers inside a container image (`image=` on the local backend).

Each worker is `docker run -i --rm IMAGE python -m burla_core.worker --stdio` (or podman): the
same worker code, speaking the pool's protocol over the container's stdin and stdout instead of
forked pipes. The image needs Python and this package installed, at the caller's versions.
"""

from __future__ import annotations

import atexit
import os
import subprocess
import sys
import threading
from types import SimpleNamespace

from multiprocess.connection import Connection

from burla_core.pool import Worker, WorkerPool


class ContainerProcess:
    """The bits of a multiprocess.Process the pool uses, for a container's client process."""

    def __init__(self, popen: subprocess.Popen) -> None:
        self.popen = popen
        self.pid = popen.pid
        # The pool waits on `sentinel` like on a forked worker's: a pidfd becomes readable when
        # the process exits; without pidfds, a thread closes a pipe when it does.
        if hasattr(os, "pidfd_open"):
            self.sentinel = os.pidfd_open(popen.pid)
        else:
            self.sentinel, write_end = os.pipe()
            threading.Thread(target=lambda: (popen.wait(), os.close(write_end)), daemon=True).start()

    def is_alive(self) -> bool:
        return self.popen.poll() is None

    @property
    def exitcode(self) -> int | None:
        return self.popen.poll()

    def join(self, timeout: float | None = None) -> None:
        try:
            self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            pass


class ContainerPool(WorkerPool):
    def __init__(self, engine: str, image: str, ram_limit_gb: int) -> None:
        super().__init__()
        self.engine = engine
        self.image = image
        self.ram_limit_gb = ram_limit_gb

    def command(self, gpu_index: int | None) -> list[str]:
        cwd = os.getcwd()
        command = [self.engine, "run", "-i", "--rm", "--init", "--network", "host", "-v", f"{cwd}:{cwd}", "-w", cwd]
        # func_ram is enforced by the engine: the pool's watchdog sees only the client process.
        command += ["--memory", f"{self.ram_limit_gb}g"]
        if gpu_index is not None:
            command += ["--gpus", f"device={gpu_index}", "-e", "CUDA_VISIBLE_DEVICES=0"]
        return command + [self.image, "python", "-m", "burla_core.worker", "--stdio"]

    def _start_worker(self, profile: tuple, gpu_index: int | None) -> Worker:
        popen = subprocess.Popen(self.command(gpu_index), stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=sys.stderr)
        inbox = Connection(os.dup(popen.stdin.fileno()), readable=False)
        outbox = Connection(os.dup(popen.stdout.fileno()), writable=False)
        popen.stdin.close()
        popen.stdout.close()
        return Worker(
            ContainerProcess(popen),
            inbox,
            outbox,
            SimpleNamespace(value=-1),  # updated from the worker's "s" reports
            SimpleNamespace(value=0),
            SimpleNamespace(value=0),
            profile,
        )


_pools: dict[tuple[str, str, int], ContainerPool] = {}
_lock = threading.Lock()


def container_pool(engine: str, image: str, ram_limit_gb: int) -> ContainerPool:
    with _lock:
        key = (engine, image, ram_limit_gb)
        if key not in _pools:
            _pools[key] = ContainerPool(engine, image, ram_limit_gb)
        return _pools[key]


@atexit.register
def _stop_container_workers() -> None:
    for pool in list(_pools.values()):
        pool.shutdown()
