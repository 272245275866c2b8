"""Workers inside a container image (`image=` on the local backend).

Each worker is `docker run -i --rm IMAGE python -m burla_core.worker --stdio` (or podman): the
same worker code, speaking the pool's protocol over the container's stdin and stdout instead of
forked pipes. The image needs Python and this package installed, at the caller's versions.
"""

from __future__ import annotations

import atexit
import os
import threading

from burla_core.stdio_pool import StdioWorkerPool


class ContainerPool(StdioWorkerPool):
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

    def environment(self, gpu_index: int | None) -> dict | None:
        return None  # the container's GPU is chosen by --gpus, not by this process's variables


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
