"""What the job store holds: its schema, job statuses, and the records its readers get."""

from __future__ import annotations

import json
import pickle
from dataclasses import dataclass
from typing import Iterator, Protocol

from .errors import BurlaError, NodeDisconnected
from .types import ErrorInfo

QUEUED, RUNNING, DONE, FAILED, CANCELED = "queued", "running", "done", "failed", "canceled"
FINISHED = frozenset({DONE, FAILED, CANCELED})
STORE_FILE_NAME = "jobs.sqlite3"
SCHEMA_VERSION = 1
BUSY_TIMEOUT_SECONDS = 30.0
INPUT_COMMIT_SECONDS = 0.25  # the caller commits inputs at least this often...
INPUT_COMMIT_BYTES = 8 * 1000 * 1000  # ...or whenever this much is buffered
PAGE_ROWS = 500  # inputs/results read per query: short reads let the WAL be checkpointed...
PAGE_BYTES = 8 * 1000 * 1000  # ...and a page holds at most this much (or one row), whatever the rows weigh
FLUSH_SECONDS = 0.1  # how often the runner commits logs, results and counts
MAX_BUFFERED_BYTES = 64 * 1000 * 1000  # results waiting to be written before the runner waits

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    job_id TEXT PRIMARY KEY,
    function_name TEXT NOT NULL,
    backend TEXT NOT NULL,
    status TEXT NOT NULL,
    total INTEGER,
    done INTEGER NOT NULL DEFAULT 0,
    failed INTEGER NOT NULL DEFAULT 0,
    running INTEGER NOT NULL DEFAULT 0,
    created_at REAL NOT NULL,
    started_at REAL,
    finished_at REAL,
    creator_pid INTEGER,
    runner_pid INTEGER,
    cancel_requested INTEGER NOT NULL DEFAULT 0,
    cwd TEXT,
    python_path TEXT,
    spec BLOB,
    error_index INTEGER,
    error BLOB
);
CREATE INDEX IF NOT EXISTS jobs_by_created ON jobs (created_at);
CREATE TABLE IF NOT EXISTS inputs (
    job_id TEXT NOT NULL,
    input_index INTEGER NOT NULL,
    payload BLOB NOT NULL,
    PRIMARY KEY (job_id, input_index)
);
CREATE TABLE IF NOT EXISTS results (
    seq INTEGER PRIMARY KEY,
    job_id TEXT NOT NULL,
    input_index INTEGER NOT NULL,
    payload BLOB NOT NULL,
    UNIQUE (job_id, input_index)
);
CREATE INDEX IF NOT EXISTS results_by_seq ON results (job_id, seq);
CREATE TABLE IF NOT EXISTS logs (
    seq INTEGER PRIMARY KEY,
    job_id TEXT NOT NULL,
    input_index INTEGER,
    stream INTEGER NOT NULL,
    text TEXT NOT NULL,
    time REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS logs_by_seq ON logs (job_id, seq);
"""

_JOB_COLUMNS = (
    "job_id, function_name, backend, status, total, done, failed, running, created_at, started_at, "
    "finished_at, creator_pid, runner_pid, cancel_requested, cwd, python_path, error_index, error"
)


class UnknownJob(BurlaError):
    """No job in the store has this id (or the prefix matches several)."""


class RunnerLost(NodeDisconnected):
    """The process running a detached job stopped before the job ended (killed, crashed, or the
    machine restarted). Its output is in the runner log the message names."""


@dataclass
class JobRecord:
    """One row of the jobs table, as readers see it."""

    job_id: str
    function_name: str
    backend: str
    status: str
    total: int | None
    done: int
    failed: int
    running: int
    created_at: float
    started_at: float | None
    finished_at: float | None
    creator_pid: int | None
    runner_pid: int | None
    cancel_requested: bool
    cwd: str | None
    python_path: list[str]
    error_index: int | None
    error: ErrorInfo | None

    @property
    def finished(self) -> bool:
        return self.status in FINISHED

    @classmethod
    def from_row(cls, row: tuple) -> "JobRecord":
        values = list(row)
        values[13] = bool(values[13])
        values[15] = json.loads(values[15]) if values[15] else []
        values[17] = ErrorInfo.from_wire(pickle.loads(values[17])) if values[17] is not None else None
        return cls(*values)


@dataclass
class LogEntry:
    seq: int
    input_index: int | None
    stream: int  # 1 stdout, 2 stderr
    text: str
    time: float


class JobSource(Protocol):
    """What readers of detached jobs use (`DetachedTail`, `burla jobs`): the local JobStore, or a
    backend's own store of the jobs it runs on its cluster (the gcp backend's)."""

    def resolve_id(self, job_id_or_prefix: str) -> str: ...

    def get(self, job_id: str) -> JobRecord: ...

    def list_jobs(self, limit: int | None = None) -> list[JobRecord]: ...

    def check_alive(self, record: JobRecord, owner_exited: bool | None = None) -> JobRecord: ...

    def logs_after(self, job_id: str, seq: int, limit: int = 1000) -> list[LogEntry]: ...

    def results_after(self, job_id: str, seq: int) -> list[tuple[int, int, bytes]]: ...

    def iter_results(self, job_id: str) -> Iterator[tuple[int, bytes]]: ...

    def request_cancel(self, job_id: str) -> JobRecord: ...

    def prune(self, finished_before: float | None = None) -> list[str]: ...

    def close(self) -> None: ...
