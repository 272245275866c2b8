"""The workers of the Dask cluster as Burla nodes: one node per machine (the Dask workers of one
host), whose slots are the sum of its workers' slots. A worker's slots come from its threads (a
Dask worker runs as many tasks at once as it has threads), its memory limit and the GPUs of its
machine. Machines whose workers join or leave while a job runs join or leave the job.

A node is a machine rather than a worker so that a machine's batches wait in one queue, taken
by whichever of its workers is free first (a 1-thread worker stuck on a slow call does not hold
back the batch queued behind it while its neighbour idles)."""

from __future__ import annotations

import logging
import threading
import time

from burla_core.errors import NoNodes, VersionMismatch
from burla_core.gpus import matching
from burla_core.engine.fit import raise_nothing_fits
from burla_core.interfaces import Provisioner
from burla_core.machine import GIB
from burla_core.node.capacity import NodeCapacity
from burla_core.node.protocol import burla_version, python_version, version_mismatch
from burla_core.types import JobSpec, Membership, NodeInfo, ResourceRequest

from .client import WorkerFacts, dask_client, worker_facts
from .settings import DaskSettings

log = logging.getLogger("burla.dask")

NO_WORKER_WAIT_SECONDS = 20.0  # a call on a cluster with no worker waits this long for one
WATCH_SECONDS = 1.0  # how often a running job looks for workers that joined or left
# A machine whose workers are all gone leaves the job only after this long: a nanny restarts a
# worker that died within seconds (its tasks are retried meanwhile).
MACHINE_LOSS_SECONDS = 10.0


def scheduler_workers(client) -> dict[str, dict]:
    """Every worker the scheduler knows: address -> its info (nthreads, memory_limit, resources)."""
    try:
        info = client.scheduler_info(n_workers=-1)
    except TypeError:  # distributed before n_workers existed returned every worker
        info = client.scheduler_info()
    return dict(info.get("workers", {}))


def describe_worker(address: str, info: dict, facts: WorkerFacts) -> str:
    limit = info.get("memory_limit") or 0
    memory = f"a {limit / GIB:.1f} GiB memory limit" if limit else f"no memory limit ({facts.ram_bytes / GIB:.1f} GiB machine)"
    gpus = ", ".join(g.name for g in facts.gpus) or "no GPU"
    image = f", image {facts.image!r}" if facts.image else ""
    return f"{address} has {info.get('nthreads', 0)} thread(s), {memory}, {gpus}{image}"


def worker_node(address: str, info: dict, facts: WorkerFacts, request: ResourceRequest) -> NodeInfo:
    """The worker as a node, with `slots` for `request` (0 when it cannot run it)."""
    threads = int(info.get("nthreads", 0))
    ram_bytes = info.get("memory_limit") or facts.ram_bytes
    capacity = NodeCapacity(cpus=threads, ram_gb=ram_bytes / GIB, gpus=list(facts.gpus), image=facts.image)
    slots = capacity.max_slots(request.func_cpu, request.func_ram, request.func_gpu)
    gpus = list(facts.gpus)
    if request.func_gpu is not None:
        # A Dask worker uses the GPU it sees (dask-cuda: one worker per GPU): one GPU call at a time.
        gpus = matching(facts.gpus, request.func_gpu)[:1]
        slots = min(slots, len(gpus))
    if request.image is not None and facts.image != request.image:
        slots = 0
    return NodeInfo(
        node_id=address, cpus=threads, ram_gb=ram_bytes / GIB, gpus=gpus, image=facts.image, address=address, slots=slots
    )


def worker_host(address: str, info: dict) -> str:
    return str(info.get("host") or address.split("://", 1)[-1].rsplit(":", 1)[0])


def usable_workers(
    client, workers: dict[str, dict], request: ResourceRequest
) -> tuple[dict[str, list[NodeInfo]], list[str], list[str]]:
    """Workers that can run `request`, by host (each with its slots), and the descriptions of
    those that cannot (refused: too small; broken: cannot run Burla's code)."""
    facts = worker_facts(client, list(workers))
    hosts: dict[str, list[NodeInfo]] = {}
    refused, broken = [], []
    for address, info in workers.items():
        fact = facts.get(address)
        if not isinstance(fact, WorkerFacts):
            broken.append(f"{address} ({fact or 'did not answer'})")
            continue
        mismatch = version_mismatch(python_version(), burla_version(), fact.python, fact.burla)
        if mismatch:
            raise VersionMismatch(f"Dask worker {address}: {mismatch}")
        node = worker_node(address, info, fact, request)
        if node.slots > 0:
            hosts.setdefault(worker_host(address, info), []).append(node)
        else:
            refused.append(describe_worker(address, info, fact))
    return hosts, refused, broken


def host_node(host: str, workers: list[NodeInfo]) -> NodeInfo:
    return NodeInfo(
        node_id=f"dask:{host}",
        cpus=sum(worker.cpus for worker in workers),
        ram_gb=sum(worker.ram_gb for worker in workers),
        gpus=[gpu for worker in workers for gpu in worker.gpus],
        image=workers[0].image,
        address=host,
        slots=sum(worker.slots for worker in workers),
    )


class DaskProvisioner(Provisioner):
    def __init__(self, options: dict | None = None) -> None:
        super().__init__(options)
        self.settings = DaskSettings.from_options(self.options)

    def eligible_nodes(self, request: ResourceRequest) -> list[NodeInfo]:
        client = dask_client(self.settings)
        workers = scheduler_workers(client)
        if not workers:
            # A cluster between workers (a nanny restarting a dead one, an adaptive cluster
            # scaling up) gets a moment before the call gives up on it.
            try:
                client.wait_for_workers(1, timeout=NO_WORKER_WAIT_SECONDS)
            except Exception:  # distributed raises TimeoutError (of its own kind, by version)
                pass
            workers = scheduler_workers(client)
        if not workers:
            raise NoNodes(
                f"the Dask cluster at {self.settings.address} has no workers (waited "
                f"{NO_WORKER_WAIT_SECONDS:.0f} s for one): start some with `dask worker {self.settings.address}`"
            )
        hosts, refused, broken = usable_workers(client, workers, request)
        if hosts:
            return [host_node(host, host_workers) for host, host_workers in sorted(hosts.items())]
        raise_nothing_fits(
            "Dask worker", request, refused, broken,
            install="Install this package (burla-open, with the [dask] extra) at the caller's version in the workers' environment.",
            gpu_hint="needs a worker on a machine with that GPU.", image_hint="Workers",
            advice="Lower func_cpu/func_ram, or start workers with more threads (--nthreads) or memory (--memory-limit).",
        )

    def watch_job(self, job: JobSpec, nodes: list[NodeInfo], membership: Membership) -> None:
        membership.growth_ended()  # Burla does not scale a Dask cluster; workers it gains still join
        known = {node.node_id for node in nodes}
        thread = threading.Thread(
            target=self._watch, args=(job.resources, known, membership), name="burla-dask-watch", daemon=True
        )
        thread.start()

    def _watch(self, request: ResourceRequest, known: set[str], membership: Membership) -> None:
        """Machines that gain their first usable worker join; machines left without any leave.
        (A worker that leaves a machine still in the job: its session retries its inputs.)"""
        client = dask_client(self.settings)
        stop = threading.Event()
        missing_since: dict[str, float] = {}
        while not membership.closed and not stop.wait(WATCH_SECONDS):
            try:
                workers = scheduler_workers(client)
                hosts, _, _ = usable_workers(client, workers, request)
            except Exception:  # the scheduler did not answer this time; the job's own tasks tell more
                log.debug("asking the Dask scheduler for its workers failed", exc_info=True)
                continue
            present = {host_node(host, nodes).node_id: host_node(host, nodes) for host, nodes in hosts.items()}
            now = time.monotonic()
            for node_id in sorted(known - set(present)):
                missing_since.setdefault(node_id, now)
                if now - missing_since[node_id] > MACHINE_LOSS_SECONDS:
                    known.discard(node_id)
                    missing_since.pop(node_id)
                    membership.leave(node_id, "every Dask worker of this machine left the cluster")
            for node_id, node in sorted(present.items()):
                missing_since.pop(node_id, None)
                if node_id not in known:
                    known.add(node_id)
                    membership.join(node)
