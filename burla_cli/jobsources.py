"""Where `burla jobs` finds detached jobs: the local job store (jobs started on the local and
nodes backends), and, on a machine logged into a gcp cluster, the cluster's own (jobs started
with backend "gcp" live there, from any machine). `AllJobs` reads both as one JobSource."""

from __future__ import annotations

import sys
from typing import Iterator

from burla_core.errors import BurlaError, UnauthorizedError
from burla_core.jobstore import JobRecord, JobSource, JobStore, LogEntry, UnknownJob


def cluster_source() -> JobSource | None:
    """The gcp cluster's jobs if this machine is logged into one; None (said on stderr when the
    login is there but unusable) otherwise."""
    import os

    from burla_backend_gcp.settings import CLUSTER_URL_ENV, credentials_path

    if not os.environ.get(CLUSTER_URL_ENV) and not credentials_path().exists():
        return None
    from burla_backend_gcp.cluster_jobs import ClusterJobSource

    try:
        return ClusterJobSource()
    except (UnauthorizedError, BurlaError) as error:
        print(f"burla jobs: the gcp cluster's jobs are left out: {error}", file=sys.stderr)
        return None


class AllJobs:
    """The local store and the cluster's, read as one (each job answered by the one that has it)."""

    def __init__(self, local: JobStore, cluster: JobSource | None) -> None:
        self.local = local
        self.cluster = cluster
        self._where: dict[str, JobSource] = {}

    def _source(self, job_id: str) -> JobSource:
        if job_id not in self._where:
            self.resolve_id(job_id)
        return self._where[job_id]

    def _cluster_call(self, what, default):
        try:
            return what()
        except UnknownJob:
            raise
        except BurlaError as error:
            print(f"burla jobs: the gcp cluster's jobs are left out: {error}", file=sys.stderr)
            self.cluster = None
            return default

    def resolve_id(self, job_id_or_prefix: str) -> str:
        try:
            job_id = self.local.resolve_id(job_id_or_prefix)
            self._where[job_id] = self.local
            return job_id
        except UnknownJob as local_error:
            if self.cluster is None:
                raise
            cluster = self.cluster
            try:
                job_id = cluster.resolve_id(job_id_or_prefix)
            except UnknownJob:
                raise local_error from None
            self._where[job_id] = cluster
            return job_id

    def get(self, job_id: str) -> JobRecord:
        return self._source(job_id).get(job_id)

    def list_jobs(self, limit: int | None = None) -> list[JobRecord]:
        records = self.local.list_jobs(limit)
        for record in records:
            self._where[record.job_id] = self.local
        if self.cluster is not None:
            cluster = self.cluster
            remote = self._cluster_call(lambda: cluster.list_jobs(limit), [])
            for record in remote:
                self._where[record.job_id] = cluster
            records = sorted(records + remote, key=lambda record: record.created_at, reverse=True)
        return records[:limit] if limit is not None else records

    def check_alive(self, record: JobRecord, owner_exited: bool | None = None) -> JobRecord:
        return self._source(record.job_id).check_alive(record, owner_exited)

    def logs_after(self, job_id: str, seq: int, limit: int = 1000) -> list[LogEntry]:
        return self._source(job_id).logs_after(job_id, seq, limit)

    def results_after(self, job_id: str, seq: int) -> list[tuple[int, int, bytes]]:
        return self._source(job_id).results_after(job_id, seq)

    def iter_results(self, job_id: str) -> Iterator[tuple[int, bytes]]:
        return self._source(job_id).iter_results(job_id)

    def request_cancel(self, job_id: str) -> JobRecord:
        return self._source(job_id).request_cancel(job_id)

    def prune(self, finished_before: float | None = None) -> list[str]:
        removed = self.local.prune(finished_before)
        if self.cluster is not None:
            cluster = self.cluster
            removed += self._cluster_call(lambda: cluster.prune(finished_before), [])
        return removed

    def close(self) -> None:
        self.local.close()
        if self.cluster is not None:
            self.cluster.close()
