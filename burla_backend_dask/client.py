"""One `distributed.Client` per scheduler address, shared by every call of this process (a
connection takes ~0.1 s; a call should not pay it), and the probe of what each worker has."""

from __future__ import annotations

import concurrent.futures
import os
import threading
from dataclasses import dataclass, field

from burla_core.errors import NodeDisconnected
from burla_core.types import GpuInfo

from .settings import DaskSettings

_clients: dict[tuple[int, str], object] = {}
_lock = threading.Lock()


def dask_client(settings: DaskSettings):
    """The shared client of `settings.address`, connected (a failure says where it tried)."""
    key = (os.getpid(), settings.address)
    with _lock:
        client = _clients.get(key)
        if client is not None and client.status == "running":
            return client
        from distributed import Client

        try:
            client = Client(settings.address, set_as_default=False, timeout=settings.connect_seconds)
        except (OSError, TimeoutError) as error:
            raise NodeDisconnected(
                f"cannot reach the Dask scheduler at {settings.address} within {settings.connect_seconds:.0f} s "
                f"({type(error).__name__}: {error}); is it running, and is the address right "
                "(backend_options['address'] or BURLA_DASK_ADDRESS)?"
            ) from None
        _clients[key] = client
        return client


@dataclass
class WorkerFacts:
    """What one Dask worker's machine has and runs, as it reported it (burla_backend_dask.remote.probe)."""

    python: str
    burla: str
    ram_bytes: int
    gpus: list[GpuInfo] = field(default_factory=list)
    image: str | None = None


_facts: dict[str, WorkerFacts | str] = {}  # worker address -> its facts, or why it could not say
PROBE_SECONDS = 30.0


def worker_facts(client, addresses: list[str]) -> dict[str, WorkerFacts | str]:
    """Facts of each worker, asked once per worker address (a restarted worker has a new one);
    for a worker that cannot run Burla's code, the reason as text."""
    missing = [address for address in addresses if address not in _facts]
    if missing:
        from .remote import probe

        # client.run has no deadline of its own: a worker that never answers must not hang the call.
        executor = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="burla-dask-probe")
        asked = executor.submit(client.run, probe, workers=missing, on_error="return")
        executor.shutdown(wait=False)
        try:
            answers = asked.result(timeout=PROBE_SECONDS)
        except concurrent.futures.TimeoutError:
            raise NodeDisconnected(
                f"the Dask workers {', '.join(missing)} did not answer within {PROBE_SECONDS:.0f} s"
            ) from None
        for address in missing:
            answer = answers.get(address)
            if isinstance(answer, dict):
                gpus = [GpuInfo(index=g[0], name=g[1], family=g[2], memory_gb=g[3]) for g in answer["gpus"]]
                _facts[address] = WorkerFacts(answer["python"], answer["burla"], answer["ram_bytes"], gpus, answer["image"])
            elif answer is not None:
                _facts[address] = f"{type(answer).__name__}: {answer}"
    return {address: _facts[address] for address in addresses if address in _facts}
