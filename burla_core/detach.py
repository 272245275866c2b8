"""`detach=True`: the job runs in a process of its own that outlives the caller.

    caller (remote_parallel_map)                         runner: python -m burla_core.detach ID STORE
      │ 1. job row + pickled function ──► jobs.sqlite3 ◄──── 3. claim, read inputs page by page
      │ 2. inputs, pickled one by one ──►      ▲    │        JobRun (the backend's scheduler)
      │    then start the runner (own session) │    │        logs / results / counts / error
      └─ 4. tail: print logs, collect results ─┘    └──────► JobWriter (a commit every 0.1 s)

The runner works for any backend: it resolves the backend by name and drives the same JobRun a
normal call uses, with a console that writes to the store instead of the terminal. The caller
behaves like a normal call (logs printed as they arrive, results in input order or as they
complete, the job's error raised with its type and input index); Ctrl-C only stops the waiting,
and killing the caller does not stop the job. SIGTERM to the runner (`burla jobs cancel`)
cancels the job.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import traceback
from pathlib import Path
from typing import Any, Iterator

from .console import Console
from .errors import BurlaError, JobCanceled, RemoteTraceback
from .jobstore import CANCELED, DONE, FAILED, JobRecord, JobSource, JobStore
from .jobwriter import JobWriter
from .run import start_run
from .serialization import as_one_pickle, dumps_input, error_info, exception_for, load_result, rebuild_exception
from .types import ErrorInfo, JobProgress, JobSpec

POLL_MIN_SECONDS = 0.02
POLL_MAX_SECONDS = 0.2


def run_detached(
    job: JobSpec,
    records: tuple,
    indexed_inputs: Iterator[tuple[int, Any]],
    input_count: int | None,
    *,
    generator: bool,
    spinner: bool,
) -> list | Iterator:
    """Store the job, start its runner, and wait for it like a normal call would."""
    provisioner = records[0].factory(job.options)
    if provisioner.runs_detached:  # the backend keeps it (on its cluster): not this machine
        return provisioner.run_detached(job, indexed_inputs, input_count, generator=generator, spinner=spinner)
    # A request no node can satisfy fails here, at once, not later in the runner.
    provisioner.eligible_nodes(job.resources)
    store = JobStore()
    python_path = caller_python_path()
    store.create_job(job, records[0].name, input_count, os.getcwd(), python_path)
    try:
        total = store.add_inputs(job.job_id, _pickled_inputs(indexed_inputs))
        runner = start_runner(store, job.job_id, python_path)
    except BaseException:
        # The job never started: leave nothing behind for `burla jobs` to show.
        store.delete_job(job.job_id)
        store.close()
        raise
    tail = DetachedTail(store, job, runner, total, spinner)
    if generator:
        return tail.completed()
    return tail.in_input_order()


def _pickled_inputs(indexed_inputs: Iterator[tuple[int, Any]]) -> Iterator[tuple[int, bytes]]:
    for input_index, value in indexed_inputs:
        yield input_index, as_one_pickle(dumps_input(input_index, value))  # the store keeps blobs


def caller_python_path() -> list[str]:
    """The caller's import path, less what the same interpreter finds by itself (its prefixes),
    so that functions pickled by reference import in the runner and its workers."""
    prefixes = {os.path.abspath(p) for p in (sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix)}
    paths: list[str] = []
    for entry in sys.path:
        if not isinstance(entry, str):
            continue
        path = os.path.abspath(entry or os.getcwd())
        if any(path == prefix or path.startswith(prefix + os.sep) for prefix in prefixes):
            continue
        if path not in paths:
            paths.append(path)
    return paths


def start_runner(store: JobStore, job_id: str, python_path: list[str]) -> subprocess.Popen:
    """Start the job's runner in a session of its own (a terminal's Ctrl-C or hang-up does not
    reach it), with the caller's working directory and import path."""
    env = dict(os.environ)
    existing = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    env["PYTHONPATH"] = os.pathsep.join(python_path + [p for p in existing if p not in python_path])
    log_path = store.runner_log_path(job_id)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    if os.name == "nt":
        platform_kwargs: dict = {
            "creationflags": subprocess.CREATE_NEW_PROCESS_GROUP | subprocess.DETACHED_PROCESS  # type: ignore[attr-defined]
        }
    else:
        platform_kwargs = {"start_new_session": True}
    with open(log_path, "ab") as log:
        runner = subprocess.Popen(
            [sys.executable, "-m", "burla_core.detach", job_id, str(store.path)],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=os.getcwd(),
            env=env,
            close_fds=True,
            **platform_kwargs,
        )
    store.set_runner(job_id, runner.pid)
    return runner


# --- the caller's side: tail the store ------------------------------------------------------------


def job_error(record: JobRecord) -> BaseException:
    """The exception a failed job raises in the caller, as a normal call would raise it."""
    info = record.error or ErrorInfo(type_name="Exception", message="the job failed")
    if record.error_index is not None:
        return exception_for(record.error_index, info)
    # The job failed outside the function (no node fits, the runner was lost): raise that error.
    error = rebuild_exception(info, None)
    if not isinstance(error, BurlaError) and info.traceback:
        error.__cause__ = RemoteTraceback(f"Traceback from job {record.job_id}'s runner:\n" + info.traceback)
    return error


def keeps_running_message(job_id: str) -> str:
    return (
        f"burla: stopped waiting; detached job {job_id} keeps running in the background.\n"
        f"burla:   see its output:   burla jobs logs {job_id} --follow\n"
        f"burla:   get its results:  burla jobs results {job_id}\n"
        f"burla:   stop it:          burla jobs cancel {job_id}\n"
    )


class DetachedTail:
    """The caller's view of a detached job: prints its logs, hands back its results, raises its
    error. Stopping early (Ctrl-C, closing the generator) leaves the job running."""

    def __init__(self, store: JobSource, job: JobSpec, runner: subprocess.Popen | None, total: int, spinner: bool) -> None:
        self.store = store
        self.job = job
        self.job_id = job.job_id
        self.runner = runner
        self.total = total
        self.console = Console(spinner, f"{job.function_name} (job {job.job_id})")

    def _follow(self, stream_results: bool) -> Iterator[tuple[int, bytes]]:
        """Yields (input_index, payload) in completion order if `stream_results`; returns when
        the job is done, raises its error if it failed or was canceled."""
        store, job_id, console = self.store, self.job_id, self.console
        last_log = last_result = 0
        delay = POLL_MIN_SECONDS
        try:
            while True:
                record = store.get(job_id)
                if not record.finished:
                    runner_exited = None if self.runner is None else self.runner.poll() is not None
                    record = store.check_alive(record, owner_exited=runner_exited)
                # The final status is committed with the last logs and results: read after it.
                got_anything = False
                while entries := store.logs_after(job_id, last_log):
                    console.write_logs([(entry.input_index, entry.stream, entry.text) for entry in entries])
                    last_log = entries[-1].seq
                    got_anything = True
                while stream_results and (rows := store.results_after(job_id, last_result)):
                    last_result = rows[-1][0]
                    got_anything = True
                    for _, input_index, payload in rows:
                        yield input_index, payload
                if record.finished:
                    break
                console.update(JobProgress(total=record.total, done=record.done, running=record.running, failed=record.failed))
                delay = POLL_MIN_SECONDS if got_anything else min(POLL_MAX_SECONDS, delay * 1.5)
                time.sleep(delay)
        except (KeyboardInterrupt, GeneratorExit):
            console.close()
            self._say_keeps_running()
            raise
        finally:
            console.close()
        if record.status == FAILED:
            raise job_error(record)
        if record.status == CANCELED:
            raise JobCanceled(f"job {job_id} ({record.function_name}) was canceled (burla jobs cancel)")

    def _say_keeps_running(self) -> None:
        try:
            record = self.store.get(self.job_id)
            if record.finished:
                return
            sys.stderr.write(keeps_running_message(self.job_id))
            sys.stderr.flush()
        except Exception:  # interpreter shutdown, a closed stream: the message is best effort
            pass

    def completed(self) -> Iterator:
        stream = self._follow(stream_results=True)
        try:
            for input_index, payload in stream:
                yield load_result(input_index, payload)
        finally:
            stream.close()  # when the caller stops early: says that the job keeps running
            self.store.close()

    def in_input_order(self) -> list:
        try:
            for _ in self._follow(stream_results=False):
                pass
            results: list = [None] * self.total
            for input_index, payload in self.store.iter_results(self.job_id):
                results[input_index] = load_result(input_index, payload)
            return results
        finally:
            self.store.close()


# --- the runner's side ----------------------------------------------------------------------------


class StoreConsole:
    """The runner's console: the function's output and Burla's notices go to the job store."""

    def __init__(self, writer: JobWriter) -> None:
        self.writer = writer

    def write_logs(self, entries: list) -> None:
        self.writer.add_logs(entries)

    def notice(self, text: str) -> None:
        self.writer.add_logs([(None, 2, f"burla: {text}\n")])

    def update(self, progress, force: bool = False) -> None:
        self.writer.set_progress(progress.running, progress.failed)

    def close(self) -> None:
        pass


STUCK_SECONDS = 5.0  # a second cancel this long after the first kills a runner that did not stop


class _CancelRequest:
    """Set by SIGTERM (`burla jobs cancel`); the runner's JobRun checks it between events, so a
    cancel stops the job from the outside of the scheduler and never cuts its cleanup short."""

    requested_at: float | None = None

    @classmethod
    def is_set(cls) -> bool:
        return cls.requested_at is not None


def _on_sigterm(signum, frame) -> None:
    if _CancelRequest.requested_at is None:
        _CancelRequest.requested_at = time.monotonic()
    elif time.monotonic() - _CancelRequest.requested_at > STUCK_SECONDS:
        # Asked again long after the first cancel: the runner is stuck. The store marks the job
        # canceled once it sees this process gone (a cancel was requested).
        os._exit(3)


def run_job(job_id: str, store_path: Path) -> int:
    """The runner's body: run a stored job to its end and record how it ended."""
    from . import plugins

    store = JobStore(store_path)
    writer: JobWriter | None = None
    status: str = FAILED
    error_index: int | None = None
    error: ErrorInfo | None = None
    try:
        if not store.claim(job_id, os.getpid()):
            return 0  # canceled before it started, or another runner has it
        job = store.load_spec(job_id)
        record = store.get(job_id)
        writer = JobWriter(store.path, job_id)
        errors: list[tuple[int, ErrorInfo]] = []
        run = start_run(
            job,
            plugins.resolve_backend(record.backend),
            store.iter_inputs(job_id),
            record.total,
            spinner=False,
            prepickled=True,
            console=StoreConsole(writer),
            error_sink=lambda input_index, info: errors.append((input_index, info)),
            should_stop=_CancelRequest.is_set,
        )
        stream = run._stream()
        try:
            for input_index, payload in stream:
                writer.add_result(input_index, as_one_pickle(payload))
        finally:
            stream.close()  # on cancel: stops the job's calls before the status is written
        if errors:
            status, (error_index, error) = FAILED, errors[0]
            writer.set_progress(0, 1)
        else:
            status = DONE
    except (KeyboardInterrupt, JobCanceled):
        status = CANCELED
    except BaseException as exc:  # recorded for the caller, who raises it
        status, error = FAILED, error_info(exc, 0)
        traceback.print_exc()  # into the runner log
    if writer is not None:
        try:
            writer.finish(status, error_index, error)
        except BaseException:
            store.finish(job_id, status, error_index, error)
            raise
    else:
        store.finish(job_id, status, error_index, error)
    _remove_if_empty(store.runner_log_path(job_id))
    store.close()
    return 0


def _remove_if_empty(path: Path) -> None:
    """The runner log matters only when the runner itself said something (a crash)."""
    try:
        if path.stat().st_size == 0:
            path.unlink()
    except OSError:
        pass


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2:
        sys.stderr.write("usage: python -m burla_core.detach JOB_ID STORE_PATH (started by remote_parallel_map)\n")
        return 2
    signal.signal(signal.SIGTERM, _on_sigterm)
    if hasattr(signal, "SIGHUP"):
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
    return run_job(args[0], Path(args[1]))


if __name__ == "__main__":
    sys.exit(main())
