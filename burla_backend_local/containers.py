"""Workers inside a container image (`image=` on the local backend).

Each worker is `docker run -i --rm --name burla-... IMAGE python -m burla_core.worker --stdio`
(or podman): the same worker code, speaking the pool's protocol over the container's stdin and
stdout instead of forked pipes. The image needs Python and this package installed, at the
caller's versions.

Killing the `docker run` client does not stop its container, so a worker the pool kills (a call
that ignores its cancel, the func_ram limit) or loses, and every worker still running when the
pool shuts down, is removed by name: `ENGINE rm -f NAME`.
"""

from __future__ import annotations

import atexit
import os
import subprocess
import threading
import time

from burla_core.pool import Worker
from burla_core.stdio_pool import StdioWorkerPool

REMOVE_WAIT_SECONDS = 10.0  # at shutdown, how long removals of running containers may take


class ContainerPool(StdioWorkerPool):
    passes_output_pipes = False  # a container gets none of this process's descriptors

    def __init__(self, engine: str, image: str, ram_limit_gb: int) -> None:
        super().__init__()
        self.engine = engine
        self.image = image
        self.ram_limit_gb = ram_limit_gb
        self._removals: list[subprocess.Popen] = []

    def command(self, gpu_index: int | None, name: str) -> list[str]:
        cwd = os.getcwd()
        command = [self.engine, "run", "-i", "--rm", "--init", "--name", name]
        command += ["--network", "host", "-v", f"{cwd}:{cwd}", "-w", cwd]
        # func_ram is enforced by the engine: the pool's watchdog sees only the client process.
        command += ["--memory", f"{self.ram_limit_gb}g"]
        if gpu_index is not None:
            command += ["--gpus", f"device={gpu_index}", "-e", "CUDA_VISIBLE_DEVICES=0"]
        return command + [self.image, "python", "-m", "burla_core.worker", "--stdio"]

    def environment(self, gpu_index: int | None) -> dict | None:
        return None  # the container's GPU is chosen by --gpus, not by this process's variables

    def _kill(self, worker: Worker) -> None:
        super()._kill(worker)  # the client
        self._remove(worker)

    def _on_death(self, worker: Worker) -> None:
        super()._on_death(worker)
        self._remove(worker)  # the client is gone; its container may not be (a killed client)

    def _remove(self, worker: Worker) -> None:
        """`ENGINE rm -f NAME`, in the background: the pool's lock is held here."""
        try:
            removal = subprocess.Popen(
                [self.engine, "rm", "-f", worker.process.name],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        except OSError:
            return
        with self._lock:
            self._removals = [r for r in self._removals if r.poll() is None] + [removal]

    def shutdown(self) -> None:
        super().shutdown()  # kills (and so removes) the containers of running calls
        with self._lock:
            removals = list(self._removals)
        deadline = time.monotonic() + REMOVE_WAIT_SECONDS
        for removal in removals:
            try:
                removal.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass


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
