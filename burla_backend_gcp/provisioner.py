"""The gcp backend's provisioner: a client of the cluster service.

    eligible_nodes(request) ── POST /v1/jobs ──► the ready nodes that fit, each with its
                                                  NodeAccess (node token, cluster CA)
    watch_job(job, …)       ── POST /v1/jobs/ID/start (grow=True: the service boots VMs)
                            └─ a thread long-polls GET /v1/jobs/ID/nodes and tells the job:
                                 a node that fits and serves ──► membership.join
                                 a joined node that stopped serving (deleted, preempted,
                                 failed, silent) ──► membership.leave
                                 a node booting for it ──► membership.status (the spinner)
                                 nothing left booting ──► membership.growth_ended(failures)
    release_idle()          ── POST /v1/jobs/ID/end (grown nodes delete themselves when idle)
    stop_requested(job)     ── the dashboard's Stop, as the job's reporter last heard it

The job's reporter (job_reporter.py), made here and used by the transport's sessions, tells the
service about the job's inputs for the dashboard, and hears back when someone pressed Stop.

Job data never goes through the service: the transport talks to the nodes directly.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid

from burla_core.interfaces import Provisioner
from burla_core.node.protocol import burla_version, python_version
from burla_core.types import GpuInfo, JobSpec, Membership, NodeAccess, NodeInfo, ResourceRequest

from . import job_reporter
from .cluster_client import ClusterClient
from .errors import ClusterUnreachable
from .fit import Call
from .settings import GcpSettings

log = logging.getLogger("burla.gcp")

WATCH_SECONDS = 20.0
WATCH_ERROR_PAUSE_S = 1.0
END_SECONDS = 3.0
CLUSTER_JOB_OPTION = "cluster_job_id"  # backend_options: run as this cluster job (a detached job's runner)


def node_info(node: dict, access: NodeAccess) -> NodeInfo:
    gpus = [GpuInfo(index=int(g.get("index", i)), name=str(g.get("name", "")), family=str(g.get("family", "")),
                    memory_gb=float(g.get("memory_gb", 0))) for i, g in enumerate(node.get("gpus") or [])]
    return NodeInfo(node_id=node["node_id"], cpus=int(node.get("cpus") or 0), ram_gb=float(node.get("ram_gb") or 0),
                    gpus=gpus, image=node.get("image"), address=node["address"], slots=int(node.get("slots") or 0),
                    access=access)


class GcpProvisioner(Provisioner):
    honours = frozenset({"grow", "region", "disk_gb"})
    runs_detached = True  # detach=True jobs live on the cluster (cluster_jobs.py, runner.py)

    def __init__(self, options: dict | None = None) -> None:
        super().__init__(options)
        self.settings = GcpSettings.load(self.options)
        self.client = ClusterClient(self.settings)
        self.job_id = str(self.options.get(CLUSTER_JOB_OPTION) or uuid.uuid4().hex[:16])
        self.access: NodeAccess | None = None
        self._stop = threading.Event()
        self._watcher: threading.Thread | None = None
        self._started = False
        self._job: JobSpec | None = None
        self.reporter: job_reporter.JobReporter | None = None

    def eligible_nodes(self, request: ResourceRequest) -> list[NodeInfo]:
        call = Call(request, python_version(), burla_version())
        answer = self.client.call("POST", "/v1/jobs", {"job_id": self.job_id, "call": call.to_wire()})
        self.access = NodeAccess(token=answer["node_token"], ca_pem=answer["ca_pem"])
        self._started = True
        return [node_info(node, self.access) for node in answer["nodes"]]

    def watch_job(self, job: JobSpec, nodes: list[NodeInfo], membership: Membership) -> None:
        """Return at once: telling the service the job started (and, with grow=True, what it
        boots) and watching the cluster happen in a thread."""
        self._job = job
        self.reporter = job_reporter.reporter_for(job.job_id)
        self.reporter.bind(self.settings.cluster_url, self.settings.token, self.job_id, total=job.input_count)
        watch = JobWatch(self, membership, {node.node_id for node in nodes})
        self._watcher = threading.Thread(target=watch.run, args=(job,), name=f"burla-gcp-watch-{self.job_id}", daemon=True)
        self._watcher.start()

    def run_detached(self, job: JobSpec, indexed_inputs, input_count, *, generator: bool, spinner: bool):
        from .cluster_jobs import follow, submit_detached

        total = submit_detached(self.settings, job, indexed_inputs)
        return follow(self.settings, job, total, generator=generator, spinner=spinner)

    def release_idle(self) -> None:
        """The job is over: stop watching, and tell the service (in a thread of its own, which
        the interpreter waits for at exit, for at most END_SECONDS)."""
        self._stop.set()
        if self._started:
            threading.Thread(target=self._end, name=f"burla-gcp-end-{self.job_id}").start()

    def stop_requested(self, job: JobSpec) -> str | None:
        return self.reporter.stop_requested() if self.reporter is not None else None

    def _end(self) -> None:
        outcome = {}
        if self.reporter is not None:
            job_reporter.unregister(self._job.job_id)
            self.reporter.close()  # the dashboard gets the last inputs before the job's end
            outcome = self.reporter.outcome(self._job.raise_errors)
        try:
            self.client.call("POST", f"/v1/jobs/{self.job_id}/end", outcome, timeout_s=END_SECONDS, retry_s=0.0)
        except Exception:  # the job is over either way; the service notices its silence
            log.debug("telling the cluster that job %s ended failed", self.job_id, exc_info=True)


class JobWatch:
    """The watcher thread's state: which nodes the job has, which are booting for it."""

    def __init__(self, provisioner: GcpProvisioner, membership: Membership, joined: set[str]):
        self.provisioner = provisioner
        self.membership = membership
        self.joined = set(joined)
        self.booting: dict[str, int] = {}  # node_id -> slots expected of it
        self.version = -1
        self.unreachable_since: float | None = None

    def start(self, job: JobSpec) -> bool:
        """POST /start; with grow=True, expect the nodes it boots. False if the job is over."""
        provisioner, membership = self.provisioner, self.membership
        body = {"function_name": job.function_name, "max_parallelism": job.max_parallelism,
                "wanted_slots": membership.wanted_slots if job.grow else 0}
        try:
            answer = provisioner.client.call("POST", f"/v1/jobs/{provisioner.job_id}/start", body)
        except Exception as error:  # without it no node boots: growth ends, with why
            membership.growth_ended([f"the cluster service could not start growing: {error}"])
            return not membership.closed
        self.booting = {item["node_id"]: int(item.get("slots") or 0) for item in answer.get("booting", [])}
        if self.booting:
            membership.expect(sum(self.booting.values()))
        for node_id in self.booting:
            membership.status(node_id, "booting")
        if job.grow and not self.booting:
            membership.growth_ended(answer.get("failures") or [])
        return not membership.closed

    def run(self, job: JobSpec) -> None:
        provisioner, membership = self.provisioner, self.membership
        if not self.start(job):
            return
        while not membership.closed and not provisioner._stop.is_set():
            try:
                view = provisioner.client.call(
                    "GET", f"/v1/jobs/{provisioner.job_id}/nodes?version={self.version}&timeout={WATCH_SECONDS:g}",
                    timeout_s=WATCH_SECONDS + 15, retry_s=5.0)
            except ClusterUnreachable as error:
                if self.unreachable_since is None:
                    self.unreachable_since = time.monotonic()
                    membership.notice(f"lost touch with the cluster service ({error}); the job goes on with its nodes")
                if provisioner._stop.wait(WATCH_ERROR_PAUSE_S):
                    return
                continue
            except Exception as error:  # any other answer: said once a while, retried
                log.warning("watching the cluster for job %s failed: %s", provisioner.job_id, error)
                if provisioner._stop.wait(WATCH_ERROR_PAUSE_S):
                    return
                continue
            self.unreachable_since = None
            self.apply(view)

    def apply(self, view: dict) -> None:
        membership, access = self.membership, self.provisioner.access
        self.version = int(view.get("version", self.version))
        serving = {node["node_id"]: node for node in view.get("nodes", [])}
        ended = {item["node_id"]: item for item in view.get("ended", [])}
        for node_id, node in serving.items():
            if node_id not in self.joined and int(node.get("slots") or 0) > 0 and access is not None:
                self.joined.add(node_id)
                self.booting.pop(node_id, None)
                membership.join(node_info(node, access))
        for node_id in sorted(self.joined - set(serving)):
            self.joined.discard(node_id)
            item = ended.get(node_id)
            reason = f"{item['status'].lower()}: {item['reason']}" if item else "it no longer serves"
            membership.leave(node_id, reason)
        now_booting = {item["node_id"]: item for item in view.get("booting", [])}
        for node_id in list(self.booting):
            if node_id in now_booting:
                continue
            slots = self.booting.pop(node_id)
            if node_id not in self.joined:
                membership.expect(-slots)  # it failed, or became ready but does not fit
            membership.status(node_id, "")
        for node_id, item in now_booting.items():
            self.booting.setdefault(node_id, int(item.get("slots") or 0))
            membership.status(node_id, str(item.get("progress") or "booting"))
        if membership.growing and not view.get("growing", False):
            membership.growth_ended(list(view.get("failures", [])))
