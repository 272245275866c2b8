"""The service's job records: jobs/{job_id} in Firestore, written in the background in the order
they were asked for, and remembered here, so that a call's requests never wait on Firestore.

A record this instance has not seen (another instance wrote it, or the service restarted) is read
from Firestore. Writes merge into the document; `Increment` counters are left to the writers
that own them (the detached runner).
"""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor

log = logging.getLogger("burla.cluster")

REMEMBERED_JOBS = 5000


class JobBook:
    def __init__(self, store) -> None:
        self.store = store
        self._jobs: dict[str, dict] = {}
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="burla-job-writer")

    async def get(self, job_id: str) -> dict | None:
        job = self._jobs.get(job_id)
        if job is None:
            job = await asyncio.to_thread(self.store.job, job_id)
            if job is not None:
                self._remember(job_id, job)
        return job

    def known(self, job_id: str) -> dict | None:
        """The record if this instance has it (no Firestore read)."""
        return self._jobs.get(job_id)

    def update(self, job_id: str, values: dict) -> dict:
        """Merge `values` into the record now (here) and in Firestore soon (in order)."""
        job = self._jobs.get(job_id) or {}
        job.update(values)
        self._remember(job_id, job)
        self._writer.submit(self._write, job_id, dict(values))
        return job

    def _remember(self, job_id: str, job: dict) -> None:
        if len(self._jobs) >= REMEMBERED_JOBS:
            for old in list(self._jobs)[: REMEMBERED_JOBS // 10]:
                del self._jobs[old]
        self._jobs[job_id] = job

    def _write(self, job_id: str, values: dict) -> None:
        try:
            self.store.update_job(job_id, values)
        except Exception:  # logged: the record is a record, the job itself goes on
            log.warning("writing job %s failed", job_id, exc_info=True)

    async def flush(self) -> None:
        """Wait until every write asked for so far is done."""
        await asyncio.wrap_future(self._writer.submit(lambda: None))

    def close(self) -> None:
        self._writer.shutdown(wait=True)
