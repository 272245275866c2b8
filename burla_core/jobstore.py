"""The job store: detached jobs, their inputs, logs, results and errors, in one SQLite file.

    caller ──create_job / add_inputs──► jobs.sqlite3 ◄──claim / iter_inputs── runner process
       ▲                                (WAL mode)    ◄──JobWriter thread──── (logs, results,
       └── tails logs / results / status ◄──┘  ▲                               counts, status)
                                                └── `burla jobs ...` reads, cancels, prunes

The file lives at `burla_core.config.data_dir() / "jobs.sqlite3"`. WAL mode lets the caller and
the CLI read while the runner writes; the runner commits in time-based batches (`JobWriter`),
never row by row. A job's inputs are deleted once it ends; its logs, results and error stay
until `burla jobs prune`.

Liveness: a job that is queued or running has a process that owns it (the caller while it
writes the inputs, then the runner). A reader that finds that process gone marks the job
failed (`RunnerLost`) or, if a cancel was asked for, canceled, so nothing waits on a dead job.
"""

from __future__ import annotations

import json
import os
import pickle
import sqlite3
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterable, Iterator

from . import config
from .jobrecords import (  # noqa: F401  (re-exported: readers import them from here)
    _JOB_COLUMNS,
    _SCHEMA,
    BUSY_TIMEOUT_SECONDS,
    CANCELED,
    DONE,
    FAILED,
    FINISHED,
    FLUSH_SECONDS,
    INPUT_COMMIT_BYTES,
    INPUT_COMMIT_SECONDS,
    MAX_BUFFERED_BYTES,
    PAGE_BYTES,
    PAGE_ROWS,
    QUEUED,
    RUNNING,
    SCHEMA_VERSION,
    STORE_FILE_NAME,
    JobRecord,
    JobSource,
    LogEntry,
    RunnerLost,
    UnknownJob,
)
from .processes import process_alive
from .serialization import cloudpickle_dumps, error_info
from .types import ErrorInfo, JobSpec

def store_path() -> Path:
    return config.data_dir() / STORE_FILE_NAME


class JobStore:
    """A connection to the job store. Use one per thread at a time; open as many as needed."""

    def __init__(self, path: Path | str | None = None) -> None:
        self.path = Path(path) if path is not None else store_path()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.connection = sqlite3.connect(
            self.path, timeout=BUSY_TIMEOUT_SECONDS, isolation_level=None, check_same_thread=False
        )
        self.connection.execute("PRAGMA synchronous=NORMAL")
        if self.connection.execute("PRAGMA user_version").fetchone()[0] != SCHEMA_VERSION:
            self._create_schema()

    def _create_schema(self) -> None:
        connection = self.connection
        connection.execute("PRAGMA journal_mode=WAL")  # persistent: set once for the file
        with self._write():
            if connection.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION:
                return
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    connection.execute(statement)
            connection.execute(f"PRAGMA user_version={SCHEMA_VERSION}")

    def close(self) -> None:
        self.connection.close()

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        connection = self.connection
        connection.execute("BEGIN IMMEDIATE")
        try:
            yield connection
        except BaseException:
            connection.execute("ROLLBACK")
            raise
        connection.execute("COMMIT")

    def runner_log_path(self, job_id: str) -> Path:
        """Where the runner's own stdout/stderr go (crashes of the runner itself, not the job's logs)."""
        return self.path.parent / "jobs" / f"{job_id}.log"

    # --- the caller: create a job and write its inputs ----------------------------------------

    def create_job(self, job: JobSpec, backend: str, total: int | None, cwd: str, python_path: list[str]) -> None:
        with self._write() as connection:
            connection.execute(
                "INSERT INTO jobs (job_id, function_name, backend, status, total, created_at, creator_pid, "
                "cwd, python_path, spec) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    job.job_id,
                    job.function_name,
                    backend,
                    QUEUED,
                    total,
                    time.time(),
                    os.getpid(),
                    cwd,
                    json.dumps(python_path),
                    cloudpickle_dumps(job),
                ),
            )

    def add_inputs(self, job_id: str, pickled_inputs: Iterable[tuple[int, bytes]]) -> int:
        """Write (input_index, payload) pairs as they come, committing in time/size batches;
        sets the job's total to the number written and returns it."""
        count = 0
        pending: list[tuple[str, int, bytes]] = []
        pending_bytes = 0
        last_commit = time.monotonic()

        def commit() -> None:
            nonlocal pending_bytes, last_commit
            with self._write() as connection:
                connection.executemany("INSERT INTO inputs (job_id, input_index, payload) VALUES (?, ?, ?)", pending)
            pending.clear()
            pending_bytes = 0
            last_commit = time.monotonic()

        for input_index, payload in pickled_inputs:
            pending.append((job_id, input_index, payload))
            pending_bytes += len(payload)
            count += 1
            if pending_bytes >= INPUT_COMMIT_BYTES or time.monotonic() - last_commit >= INPUT_COMMIT_SECONDS:
                commit()
        if pending:
            commit()
        with self._write() as connection:
            connection.execute("UPDATE jobs SET total = ? WHERE job_id = ?", (count, job_id))
        return count

    def set_runner(self, job_id: str, pid: int) -> None:
        with self._write() as connection:
            connection.execute("UPDATE jobs SET runner_pid = ? WHERE job_id = ? AND runner_pid IS NULL", (pid, job_id))

    def delete_job(self, job_id: str) -> None:
        with self._write() as connection:
            for table in ("inputs", "results", "logs", "jobs"):
                connection.execute(f"DELETE FROM {table} WHERE job_id = ?", (job_id,))

    # --- the runner -----------------------------------------------------------------------------

    def claim(self, job_id: str, pid: int) -> bool:
        """Mark a queued job running under `pid`. False when it was canceled before it started
        (it is then marked canceled) or is not queued any more."""
        with self._write() as connection:
            row = connection.execute("SELECT status, cancel_requested FROM jobs WHERE job_id = ?", (job_id,)).fetchone()
            if row is None:
                raise UnknownJob(f"no job {job_id!r} in {self.path}")
            status, cancel_requested = row
            if status != QUEUED:
                return False
            if cancel_requested:
                connection.execute(
                    "UPDATE jobs SET status = ?, finished_at = ? WHERE job_id = ?", (CANCELED, time.time(), job_id)
                )
                connection.execute("DELETE FROM inputs WHERE job_id = ?", (job_id,))
                return False
            connection.execute(
                "UPDATE jobs SET status = ?, runner_pid = ?, started_at = ? WHERE job_id = ?",
                (RUNNING, pid, time.time(), job_id),
            )
            return True

    def load_spec(self, job_id: str) -> JobSpec:
        row = self.connection.execute("SELECT spec FROM jobs WHERE job_id = ?", (job_id,)).fetchone()
        if row is None:
            raise UnknownJob(f"no job {job_id!r} in {self.path}")
        return pickle.loads(row[0])

    def iter_inputs(self, job_id: str) -> Iterator[tuple[int, bytes]]:
        """The job's pickled inputs in input order, read a page at a time as they are consumed."""
        return self._iter_in_input_order("inputs", job_id)

    def _iter_in_input_order(self, table: str, job_id: str) -> Iterator[tuple[int, bytes]]:
        after = -1
        while True:
            rows = self._page(table, "input_index", "input_index, payload", job_id, after)
            if not rows:
                return
            yield from rows
            after = rows[-1][0]

    def _page(self, table: str, key: str, columns: str, job_id: str, after: int) -> list[tuple]:
        """The next rows of a job after key `after`, at most PAGE_ROWS of them and PAGE_BYTES of
        payload (but at least one row): sizes first, then the payloads of the rows that fit."""
        sizes = self.connection.execute(
            f"SELECT {key}, length(payload) FROM {table} WHERE job_id = ? AND {key} > ? ORDER BY {key} LIMIT ?",
            (job_id, after, PAGE_ROWS),
        ).fetchall()
        if not sizes:
            return []
        total = 0
        last = sizes[0][0]
        for row_key, size in sizes:
            if total and total + size > PAGE_BYTES:
                break
            total += size
            last = row_key
        return self.connection.execute(
            f"SELECT {columns} FROM {table} WHERE job_id = ? AND {key} > ? AND {key} <= ? ORDER BY {key}",
            (job_id, after, last),
        ).fetchall()

    def write_batch(
        self,
        job_id: str,
        logs: list[tuple],
        results: list[tuple[int, bytes]],
        running: int,
        failed: int,
        final: tuple[str, int | None, ErrorInfo | None] | None = None,
    ) -> None:
        """One commit of the runner: logs (input_index, stream, text, time), results, counts,
        and, with `final` = (status, error_index, error info), the end of the job."""
        with self._write() as connection:
            if logs:
                connection.executemany(
                    "INSERT INTO logs (job_id, input_index, stream, text, time) VALUES (?, ?, ?, ?, ?)",
                    [(job_id, *entry) for entry in logs],
                )
            inserted = 0
            if results:
                before = connection.total_changes
                connection.executemany(
                    "INSERT OR IGNORE INTO results (job_id, input_index, payload) VALUES (?, ?, ?)",
                    [(job_id, input_index, payload) for input_index, payload in results],
                )
                inserted = connection.total_changes - before  # a result stored before counts once
            connection.execute(
                "UPDATE jobs SET done = done + ?, running = ?, failed = ? WHERE job_id = ?",
                (inserted, running, failed, job_id),
            )
            if final is not None:
                status, error_index, error = final
                connection.execute(
                    "UPDATE jobs SET status = ?, finished_at = ?, running = 0, error_index = ?, error = ? "
                    "WHERE job_id = ?",
                    (status, time.time(), error_index, _pickle_error(error), job_id),
                )
                connection.execute("DELETE FROM inputs WHERE job_id = ?", (job_id,))

    def finish(self, job_id: str, status: str, error_index: int | None = None, error: ErrorInfo | None = None) -> None:
        """End a job that is not finished yet (a job that already ended keeps its status)."""
        with self._write() as connection:
            row = connection.execute("SELECT status FROM jobs WHERE job_id = ?", (job_id,)).fetchone()
            if row is None or row[0] in FINISHED:
                return
            connection.execute(
                "UPDATE jobs SET status = ?, finished_at = ?, running = 0, error_index = ?, error = ? WHERE job_id = ?",
                (status, time.time(), error_index, _pickle_error(error), job_id),
            )
            connection.execute("DELETE FROM inputs WHERE job_id = ?", (job_id,))

    # --- readers --------------------------------------------------------------------------------

    def resolve_id(self, job_id_or_prefix: str) -> str:
        """A full job id from an id or a unique prefix of one."""
        text = job_id_or_prefix.strip()
        connection = self.connection
        if connection.execute("SELECT 1 FROM jobs WHERE job_id = ?", (text,)).fetchone():
            return text
        matches = []
        if text and all(ch.isalnum() or ch in "-_" for ch in text):
            matches = [
                row[0]
                for row in connection.execute(
                    "SELECT job_id FROM jobs WHERE job_id LIKE ? ORDER BY created_at DESC LIMIT 6", (text + "%",)
                )
            ]
        if len(matches) == 1:
            return matches[0]
        if matches:
            raise UnknownJob(f"job id {text!r} is ambiguous: it starts {', '.join(matches)}; give more characters")
        raise UnknownJob(
            f"no job with id {text!r} in {self.path}. `burla jobs` lists the ids of the jobs "
            "started with remote_parallel_map(..., detach=True)."
        )

    def get(self, job_id: str) -> JobRecord:
        row = self.connection.execute(f"SELECT {_JOB_COLUMNS} FROM jobs WHERE job_id = ?", (job_id,)).fetchone()
        if row is None:
            raise UnknownJob(
                f"no job with id {job_id!r} in {self.path}. `burla jobs` lists the ids of the jobs "
                "started with remote_parallel_map(..., detach=True)."
            )
        return JobRecord.from_row(row)

    def list_jobs(self, limit: int | None = None) -> list[JobRecord]:
        query = f"SELECT {_JOB_COLUMNS} FROM jobs ORDER BY created_at DESC, rowid DESC"
        params: tuple = ()
        if limit is not None:
            query += " LIMIT ?"
            params = (limit,)
        return [JobRecord.from_row(row) for row in self.connection.execute(query, params).fetchall()]

    def logs_after(self, job_id: str, seq: int, limit: int = 1000) -> list[LogEntry]:
        rows = self.connection.execute(
            "SELECT seq, input_index, stream, text, time FROM logs WHERE job_id = ? AND seq > ? ORDER BY seq LIMIT ?",
            (job_id, seq, limit),
        ).fetchall()
        return [LogEntry(*row) for row in rows]

    def results_after(self, job_id: str, seq: int) -> list[tuple[int, int, bytes]]:
        """The next page of (seq, input_index, payload), in the order the results arrived."""
        return self._page("results", "seq", "seq, input_index, payload", job_id, seq)

    def iter_results(self, job_id: str) -> Iterator[tuple[int, bytes]]:
        """(input_index, payload) in input order, a page at a time."""
        return self._iter_in_input_order("results", job_id)

    def check_alive(self, record: JobRecord, owner_exited: bool | None = None) -> JobRecord:
        """The record, or, if the process that owns this unfinished job is gone, the job marked
        failed (`RunnerLost`) or canceled (a cancel was asked for) and read again.
        `owner_exited`: what the runner's parent knows for sure (None: look the pid up)."""
        if record.finished or owner_exited is False:
            return record
        if owner_exited is None:
            if record.runner_pid is not None:
                alive = process_alive(record.runner_pid, record.job_id)
            else:
                alive = process_alive(record.creator_pid)
            if alive:
                return record
        with self._write() as connection:
            row = connection.execute(
                "SELECT status, cancel_requested, runner_pid FROM jobs WHERE job_id = ?", (record.job_id,)
            ).fetchone()
            if row is not None and row[0] not in FINISHED:
                status, cancel_requested, runner_pid = row
                if cancel_requested:
                    new_status, error = CANCELED, None
                elif runner_pid is None:
                    new_status = FAILED
                    error = _error_dict(
                        RunnerLost(
                            f"job {record.job_id} never started: the program that called remote_parallel_map "
                            f"(pid {record.creator_pid}) stopped while it was storing the inputs"
                        )
                    )
                else:
                    new_status = FAILED
                    error = _error_dict(
                        RunnerLost(
                            f"the process running job {record.job_id} (pid {runner_pid}) stopped before the job "
                            f"ended{self._runner_output(record.job_id)}"
                        )
                    )
                connection.execute(
                    "UPDATE jobs SET status = ?, finished_at = ?, running = 0, error = ? WHERE job_id = ?",
                    (new_status, time.time(), _pickle_error(error), record.job_id),
                )
                connection.execute("DELETE FROM inputs WHERE job_id = ?", (record.job_id,))
        return self.get(record.job_id)

    def _runner_output(self, job_id: str, max_lines: int = 20) -> str:
        """Where the runner's own output is, and its last lines (a crash's traceback)."""
        path = self.runner_log_path(job_id)
        try:
            with open(path, "rb") as log:
                log.seek(0, os.SEEK_END)
                log.seek(max(0, log.tell() - 16384))
                tail = log.read().decode(errors="replace").splitlines()[-max_lines:]
        except OSError:
            return " (it left no output)"
        if not tail:
            return f" (it left no output in {path})"
        return f"; the end of its output ({path}):\n" + "\n".join(tail)

    # --- cancel and prune -----------------------------------------------------------------------

    def request_cancel(self, job_id: str) -> JobRecord:
        """Note that the job must stop; returns the record as it was (its runner_pid is the
        process to signal). A runner that has not started yet sees the note and never starts."""
        with self._write() as connection:
            connection.execute(
                "UPDATE jobs SET cancel_requested = 1 WHERE job_id = ? AND status NOT IN (?, ?, ?)",
                (job_id, *sorted(FINISHED)),
            )
            row = connection.execute(f"SELECT {_JOB_COLUMNS} FROM jobs WHERE job_id = ?", (job_id,)).fetchone()
        if row is None:
            raise UnknownJob(f"no job with id {job_id!r} in {self.path}")
        return JobRecord.from_row(row)

    def prune(self, finished_before: float | None = None) -> list[str]:
        """Delete finished jobs (those that ended before `finished_before`, if given) with their
        logs and results; returns their ids."""
        with self._write() as connection:
            query = "SELECT job_id FROM jobs WHERE status IN (?, ?, ?)"
            params: list[Any] = sorted(FINISHED)
            if finished_before is not None:
                query += " AND finished_at < ?"
                params.append(finished_before)
            job_ids = [row[0] for row in connection.execute(query, params)]
            for job_id in job_ids:
                for table in ("inputs", "results", "logs", "jobs"):
                    connection.execute(f"DELETE FROM {table} WHERE job_id = ?", (job_id,))
        for job_id in job_ids:
            try:
                self.runner_log_path(job_id).unlink()
            except FileNotFoundError:
                pass
        return job_ids


def _error_dict(error: BaseException) -> ErrorInfo:
    return error_info(error, 0)


def _pickle_error(error: ErrorInfo | None) -> bytes | None:
    """Errors are stored as their wire dict (plain data), not as a pickled class instance."""
    return None if error is None else pickle.dumps(error.to_wire(), pickle.HIGHEST_PROTOCOL)
