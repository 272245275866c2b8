"""A job's environment on the agent: which workers run it, made before its first call there.

    create_job ──► JobSetup.start(job, JobEnvironment) ── a task; the job takes inputs meanwhile
                     │ (in a thread: an install may take minutes)
                     ├─ packages: nothing differs from the agent's ─► the agent's forked pool
                     │            else EnvironmentCache.acquire ─► a pool of workers started
                     │            in that environment (one pool per environment, kept warm)
                     └─ code:     EnvironmentCache.acquire_code ─► BURLA_CODE_PATH for its workers
                   ──► on_ready(pool, worker env): the agent starts the job's calls there
                   └─► or AgentJob.fail_setup(PackageInstallFailed), before any call ran

While packages install, the caller's progress line says what is happening ("installing 3
packages, 12 s", refreshed every STATUS_SECONDS), with a notice when it starts and ends. Pools of job environments stay warm for the next job that needs the same
environment, at most MAX_WARM_POOLS of them; a warm pool holds its environment's lease, so the
disk cap never evicts what live workers import from.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Callable

from ..envsync.activate import CODE_MODULES_KEY, CODE_PATH_KEY
from ..envsync.description import installed_requirements
from ..envsync.job import JobEnvironment
from ..errors import PackageInstallFailed
from ..pool import WorkerPool
from ..stdio_pool import EnvironmentWorkerPool
from .environments import EnvironmentBuildFailed, EnvironmentCache, InstallPlan, Lease
from .jobs import AgentJob

log = logging.getLogger("burla.node")

STATUS_SECONDS = 1.0
MAX_WARM_POOLS = 4
SETUP_THREADS = 4


@dataclass
class _EnvironmentPool:
    pool: WorkerPool
    lease: Lease
    jobs: int = 0


@dataclass
class PreparedJob:
    """Where a job runs: its pool, what its workers are told, and the cache entries it holds."""

    pool: WorkerPool
    worker_env: dict
    environment_key: str | None = None
    leases: list[Lease] = field(default_factory=list)


@dataclass
class _Progress:
    installing: InstallPlan | None = None
    since: float = 0.0


class JobSetup:
    def __init__(self, cache: EnvironmentCache | None, shared_pool: WorkerPool, sync_packages: bool, node_name: str) -> None:
        self.cache = cache
        self.shared_pool = shared_pool
        self.sync_packages = sync_packages and cache is not None
        self.node_name = node_name
        self._pools: collections.OrderedDict[str, _EnvironmentPool] = collections.OrderedDict()
        self._lock = threading.Lock()
        self._threads = concurrent.futures.ThreadPoolExecutor(SETUP_THREADS, thread_name_prefix="burla-env")

    def warm_up(self) -> None:
        """Read what the agent's own environment has, in a setup thread, before the first job
        needs it to plan: the scan of a fresh machine's packages takes a good part of a second."""
        if self.sync_packages:
            self._threads.submit(installed_requirements)

    def start(self, job: AgentJob, environment: JobEnvironment, on_ready: Callable[[WorkerPool, dict], None]) -> None:
        """Make the job's environment, then call `on_ready(pool, worker_env)` on the loop. A job
        that needs nothing is ready at once."""
        packages = environment.packages if self.sync_packages else None
        if packages is None and environment.code is None:
            on_ready(self.shared_pool, {})
            return
        job.setup_task = asyncio.get_running_loop().create_task(self._prepare_and_start(job, environment, packages, on_ready))

    async def _prepare_and_start(self, job: AgentJob, environment: JobEnvironment, packages, on_ready) -> None:
        progress = _Progress()
        loop = asyncio.get_running_loop()
        future = loop.run_in_executor(self._threads, self._prepare, job, environment, packages, progress)
        while True:
            done, _ = await asyncio.wait({future}, timeout=STATUS_SECONDS)
            if done:
                break
            plan = progress.installing
            if plan is not None:
                job.show_status(f"installing {_packages(plan)}, {time.monotonic() - progress.since:.0f} s")
        job.show_status("")
        try:
            prepared = future.result()
        except EnvironmentBuildFailed as error:
            job.fail_setup(self._failure(error))
            return
        except Exception as error:  # a bug or the disk: the job must still fail, not hang
            log.exception("job %s: making its environment failed", job.job_id)
            job.fail_setup(self._failure(EnvironmentBuildFailed(f"{type(error).__name__}: {error}")))
            return
        if job.state != "running":
            self.finished(prepared)  # canceled while it was being made
            return
        job.on_release = lambda: self.finished(prepared)
        on_ready(prepared.pool, prepared.worker_env)

    def _prepare(self, job: AgentJob, environment: JobEnvironment, packages, progress: _Progress) -> PreparedJob:
        """In a setup thread: the job's pool and worker env (installs what it must)."""
        assert self.cache is not None
        prepared = PreparedJob(self.shared_pool, {})
        try:
            if environment.code is not None:
                lease = self.cache.acquire_code(environment.code)
                prepared.leases.append(lease)
                prepared.worker_env = {CODE_PATH_KEY: str(lease.path), CODE_MODULES_KEY: ",".join(environment.code.modules)}
            plan = self.cache.plan(packages) if packages is not None else None
            if plan is not None:
                prepared.pool = self._environment_pool(job, plan, progress)
                prepared.environment_key = plan.key
        except BaseException:
            for lease in prepared.leases:
                lease.release()
            raise
        return prepared

    def _environment_pool(self, job: AgentJob, plan: InstallPlan, progress: _Progress) -> WorkerPool:
        with self._lock:
            warm = self._pools.get(plan.key)
            if warm is not None:
                warm.jobs += 1
                self._pools.move_to_end(plan.key)
                return warm.pool

        def on_install(plan: InstallPlan) -> None:
            progress.installing, progress.since = plan, time.monotonic()
            job.notice(f"installing {_packages(plan)}: {', '.join(r.spec() for r in plan.requirements[:5])}"
                       + (", ..." if len(plan.requirements) > 5 else ""))

        started = time.monotonic()
        lease = self.cache.acquire(plan, on_install=on_install)
        if progress.installing is not None:
            job.notice(f"environment ready: {_packages(plan)} installed in {time.monotonic() - started:.1f} s")
            progress.installing = None
        with self._lock:
            warm = self._pools.get(plan.key)
            if warm is not None:  # another job made the pool meanwhile
                lease.release()
            else:
                warm = self._pools[plan.key] = _EnvironmentPool(EnvironmentWorkerPool([str(lease.path)]), lease)
            warm.jobs += 1
            self._pools.move_to_end(plan.key)
            return warm.pool

    def finished(self, prepared: PreparedJob) -> None:
        """The job is over: its leases go, and pools beyond MAX_WARM_POOLS stop."""
        for lease in prepared.leases:
            lease.release()
        prepared.leases.clear()
        stopping = []
        with self._lock:
            key = prepared.environment_key
            if key is not None and key in self._pools:
                self._pools[key].jobs -= 1
            prepared.environment_key = None
            idle = [key for key, warm in self._pools.items() if warm.jobs <= 0]
            for key in idle[: max(0, len(self._pools) - MAX_WARM_POOLS)]:
                stopping.append(self._pools.pop(key))
        for warm in stopping:  # stopping workers waits for them: never on the event loop
            self._threads.submit(_stop_pool, warm)

    def _failure(self, error: EnvironmentBuildFailed) -> PackageInstallFailed:
        requirement = error.requirement
        package = requirement.name if requirement else ""
        version = requirement.version if requirement else ""
        spec = f"{package}=={version}" if package else "the job's packages"
        return PackageInstallFailed(
            f"node {self.node_name} could not install {spec}: {error}. Make the package available on the "
            "nodes' package index (their PIP_INDEX_URL / UV_INDEX_URL, or backend_options={'index_url': ...}), "
            "or pass backend_options={'sync_packages': False} to run in the nodes' own environment. "
            "The installer's last lines:\n" + (error.output or "(none)"),
            package,
            version,
            self.node_name,
            error.output or "",
        )

    def summary(self) -> dict:
        summary = {"sync_packages": self.sync_packages}
        if self.cache is not None:
            summary.update(self.cache.summary())
        with self._lock:
            summary["warm_pools"] = len(self._pools)
        return summary

    def shutdown(self) -> None:
        with self._lock:
            pools, self._pools = list(self._pools.values()), collections.OrderedDict()
        for warm in pools:
            _stop_pool(warm)
        self._threads.shutdown(wait=False, cancel_futures=True)


def _stop_pool(warm: _EnvironmentPool) -> None:
    warm.pool.shutdown()
    warm.lease.release()


def _packages(plan: InstallPlan) -> str:
    count = len(plan.requirements)
    return f"{count} package" + ("" if count == 1 else "s")
