"""`burla jobs`: list detached jobs, show their status and logs, print their results, cancel
and prune them. Everything is read from the job store (burla_core.jobstore)."""

from __future__ import annotations

import datetime
import json
import os
import pickle
import signal
import sys
import time
from typing import Any

import click

from burla_core.jobstore import CANCELED, FAILED, JobRecord, JobStore, UnknownJob
from burla_core.processes import process_alive
from burla_core.serialization import render_traceback

from .jobsources import AllJobs, cluster_source
from .params import BurlaGroup, Duration, FiniteFloat

FOLLOW_POLL_SECONDS = 0.2
CANCEL_WAIT_SECONDS = 15.0


def _open_store() -> AllJobs:
    """The local job store, with the gcp cluster's jobs when this machine is logged into one."""
    try:
        local = JobStore()
    except Exception as error:  # a corrupt file, a read-only disk
        raise click.ClickException(f"cannot open the job store: {error}") from error
    return AllJobs(local, cluster_source())


def _find(store: AllJobs, job_id: str) -> JobRecord:
    """The job (by id or unique id prefix), with a dead runner noticed."""
    try:
        record = store.get(store.resolve_id(job_id))
    except UnknownJob as error:
        raise click.ClickException(str(error)) from None
    return store.check_alive(record)


def _when(timestamp: float | None) -> str:
    if timestamp is None:
        return "-"
    return datetime.datetime.fromtimestamp(timestamp).strftime("%Y-%m-%d %H:%M:%S")


def _age(seconds: float) -> str:
    seconds = max(0.0, seconds)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{int(seconds // size)}{unit}"
    return f"{int(seconds)}s"


def _done_total(record: JobRecord) -> str:
    return f"{record.done}/{'?' if record.total is None else record.total}"


def _error_summary(record: JobRecord) -> str:
    info = record.error
    if info is None:
        return "the job failed"
    text = info.exception_only.strip() or f"{info.type_name}: {info.message}".rstrip(": ")
    where = f"input {record.error_index}: " if record.error_index is not None else ""
    return where + text


def _error_report(record: JobRecord) -> str:
    if record.error_index is None or record.error is None:
        return _error_summary(record)
    return f"input {record.error_index} raised:\n" + render_traceback(record.error).rstrip("\n")


LIMIT = click.IntRange(min=1)


# BurlaGroup: the store's errors (a job deleted mid-command, a locked file) become CLI errors.
@click.group(cls=BurlaGroup, invoke_without_command=True)
@click.option("--limit", "-n", default=20, show_default=True, type=LIMIT, help="Show at most this many jobs.")
@click.option("--all", "show_all", is_flag=True, help="Show every job (overrides --limit).")
@click.pass_context
def jobs(ctx: click.Context, limit: int, show_all: bool) -> None:
    """Detached jobs: list them, see their logs and results, cancel them.

    A job started with remote_parallel_map(..., detach=True) runs in a background process and
    keeps running when the program that started it stops (Ctrl-C, a closed terminal, a kill).
    Its status, logs, results and error are kept on this machine, in jobs.sqlite3 in Burla's
    data directory ($BURLA_DATA_DIR overrides it). On backend "gcp" the job runs on the
    cluster instead, which keeps them: they are listed here on any machine logged into it
    (`burla login`), even with the machine that started the job switched off.

    With no subcommand, lists the newest jobs first: id, status, function, done/total,
    when it was created and how long ago.

    \b
    Examples:
      burla jobs                          # the 20 newest jobs
      burla jobs logs 1a2b3c --follow     # stream a job's output until it ends
      burla jobs results 1a2b3c           # its return values, in input order
      burla jobs cancel 1a2b3c

    A job id can be shortened to any prefix that names one job.
    """
    if ctx.invoked_subcommand is None:
        _print_jobs(None if show_all else limit)


@jobs.command(name="list")
@click.option("--limit", "-n", default=20, show_default=True, type=LIMIT, help="Show at most this many jobs.")
@click.option("--all", "show_all", is_flag=True, help="Show every job (overrides --limit).")
def list_jobs(limit: int, show_all: bool) -> None:
    """List jobs, newest first (the same as `burla jobs`).

    \b
    Examples:
      burla jobs list -n 5
      burla jobs list --all
    """
    _print_jobs(None if show_all else limit)


def _print_jobs(limit: int | None) -> None:
    store = _open_store()
    records = [store.check_alive(record) for record in store.list_jobs(limit)]
    if not records:
        click.echo("No jobs yet. Start one with remote_parallel_map(function, inputs, detach=True).")
        return
    now = time.time()
    header = ("ID", "STATUS", "FUNCTION", "DONE/TOTAL", "CREATED", "AGE")
    rows = [
        (r.job_id, r.status, r.function_name, _done_total(r), _when(r.created_at), _age(now - r.created_at))
        for r in records
    ]
    widths = [max(len(row[column]) for row in [header, *rows]) for column in range(len(header))]
    for row in [header, *rows]:
        click.echo("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip())


@jobs.command()
@click.argument("job_id")
def status(job_id: str) -> None:
    """Show a job's status, progress, timings and error.

    Status is one of queued, running, done, failed, canceled; a job whose runner process died
    shows as failed.

    \b
    Example:
      burla jobs status 1a2b3c
    """
    store = _open_store()
    record = _find(store, job_id)
    now = time.time()
    lines = [
        ("job", record.job_id),
        ("status", record.status),
        ("function", record.function_name),
        ("backend", record.backend),
        ("progress", f"{_done_total(record)} done, {record.running} running, {record.failed} failed"),
        ("created", f"{_when(record.created_at)} ({_age(now - record.created_at)} ago)"),
        ("started", _when(record.started_at)),
        ("finished", _when(record.finished_at)),
    ]
    if record.started_at is not None:
        end = record.finished_at if record.finished_at is not None else now
        lines.append(("elapsed", f"{end - record.started_at:.1f}s"))
    if not record.finished and record.runner_pid:
        lines.append(("runner", f"pid {record.runner_pid}"))
    if record.cancel_requested and not record.finished:
        lines.append(("cancel", "requested"))
    if record.status == FAILED:
        lines.append(("error", _error_summary(record)))
    width = max(len(key) for key, _ in lines)
    for key, value in lines:
        click.echo(f"{key.ljust(width)}  {value}")


def _write_log(entry, timestamps: bool) -> None:
    text = entry.text
    if timestamps:
        stamp = datetime.datetime.fromtimestamp(entry.time).strftime("%H:%M:%S")
        where = f"input {entry.input_index}" if entry.input_index is not None else "burla"
        prefix = f"{stamp} [{where}] "
        text = "".join(prefix + line for line in text.splitlines(keepends=True))
    click.echo(text, nl=False, err=entry.stream == 2)


@jobs.command()
@click.argument("job_id")
@click.option("--follow", "-f", is_flag=True, help="Keep printing new output until the job ends.")
@click.option("--timestamps", "-t", is_flag=True, help="Start each line with its time and input index.")
def logs(job_id: str, follow: bool, timestamps: bool) -> None:
    """Print what a job's function wrote to stdout and stderr.

    Output the function wrote to stdout goes to stdout, and stderr to stderr, in the order it
    arrived. With --follow, waits for new output until the job ends, then says how it ended
    (Ctrl-C stops following, not the job).

    \b
    Examples:
      burla jobs logs 1a2b3c
      burla jobs logs 1a2b3c --follow --timestamps
    """
    store = _open_store()
    record = _find(store, job_id)
    last = 0
    try:
        while True:
            if follow and not record.finished:
                record = store.check_alive(store.get(record.job_id))
            while True:
                entries = store.logs_after(record.job_id, last)
                if not entries:
                    break
                for entry in entries:
                    _write_log(entry, timestamps)
                last = entries[-1].seq
            if not follow or record.finished:
                break
            time.sleep(FOLLOW_POLL_SECONDS)
    except KeyboardInterrupt:
        raise click.exceptions.Exit(130) from None
    if follow:
        ending = f"burla: job {record.job_id} {record.status} ({_done_total(record)} done)"
        if record.status == FAILED:
            ending += f": {_error_summary(record)}"
        click.echo(ending, err=True)


def _load(record: JobRecord, input_index: int, payload: bytes) -> Any:
    try:
        return pickle.loads(payload)
    except Exception as error:
        raise click.ClickException(
            f"the result of input {input_index} cannot be unpickled here ({type(error).__name__}: {error}); "
            f"run this from the directory the job was started in ({record.cwd}) or in Python with the "
            "module that defines its type importable"
        ) from error


@jobs.command()
@click.argument("job_id")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON array instead (results must be JSON-serialisable).")
def results(job_id: str, as_json: bool) -> None:
    """Print a finished job's return values, one per line, in input order.

    Each result is printed as its repr(). With --json, prints one JSON array with one result
    per line. Fails if the job has not finished yet, or failed (showing its error), or was
    canceled.

    \b
    Examples:
      burla jobs results 1a2b3c
      burla jobs results 1a2b3c --json > results.json
    """
    store = _open_store()
    record = _find(store, job_id)
    if not record.finished:
        raise click.ClickException(
            f"job {record.job_id} is still {record.status} ({_done_total(record)} done); its results are "
            f"ready when it ends. Wait for it with `burla jobs logs {record.job_id} --follow`."
        )
    if record.status == FAILED:
        raise click.ClickException(f"job {record.job_id} failed, so it has no results; {_error_report(record)}")
    if record.status == CANCELED:
        raise click.ClickException(
            f"job {record.job_id} was canceled after {_done_total(record)} inputs; it has no complete results."
        )
    # Results of types defined in the caller's modules unpickle with the caller's import path.
    for path in reversed([record.cwd or "", *record.python_path]):
        if path and path not in sys.path:
            sys.path.insert(0, path)
    rows = store.iter_results(record.job_id)
    if not as_json:
        for input_index, payload in rows:
            click.echo(repr(_load(record, input_index, payload)))
        return
    lines = []
    for input_index, payload in rows:
        value = _load(record, input_index, payload)
        try:
            lines.append(json.dumps(value))
        except (TypeError, ValueError) as error:
            raise click.ClickException(
                f"the result of input {input_index} is not JSON-serialisable ({error}); drop --json to print "
                "each result's repr()"
            ) from None
    click.echo("[\n" + ",\n".join(lines) + "\n]" if lines else "[]")


@jobs.command()
@click.argument("job_id")
@click.option(
    "--timeout",
    default=CANCEL_WAIT_SECONDS,
    show_default=True,
    type=FiniteFloat(min=0),
    help="Seconds to wait for the job to stop.",
)
def cancel(job_id: str, timeout: float) -> None:
    """Stop a running job.

    Its running calls are stopped and its queued inputs dropped; the results and logs it has
    already produced stay readable. Its status becomes "canceled". Fails if the job has
    already ended, or is still running after --timeout seconds.

    \b
    Example:
      burla jobs cancel 1a2b3c --timeout 30
    """
    store = _open_store()
    record = _find(store, job_id)
    if record.finished:
        raise click.ClickException(f"job {record.job_id} is not running (status: {record.status}); nothing to cancel")
    record = store.request_cancel(record.job_id)
    if record.runner_pid and process_alive(record.runner_pid, record.job_id):
        try:
            os.kill(record.runner_pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + timeout
    while True:
        record = store.check_alive(store.get(record.job_id))
        if record.finished:
            break
        if time.monotonic() > deadline:
            raise click.ClickException(
                f"asked job {record.job_id} to stop, but it is still {record.status} after {timeout:.0f}s "
                f"(runner pid {record.runner_pid}); run `burla jobs cancel {record.job_id}` again to stop "
                "its runner by force"
            )
        time.sleep(0.1)
    if record.status == CANCELED:
        click.echo(f"job {record.job_id} canceled ({_done_total(record)} done)")
    else:
        click.echo(f"job {record.job_id} ended before it could be canceled (status: {record.status})")


@jobs.command()
@click.option("--older-than", type=Duration(), metavar="DURATION", help="Only jobs that ended longer ago than this (e.g. 30m, 12h, 7d).")
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
def prune(older_than: float | None, yes: bool) -> None:
    """Delete finished jobs (done, failed or canceled) with their logs and results.

    Running and queued jobs are never touched. Asks for confirmation unless --yes.

    \b
    Examples:
      burla jobs prune                      # every finished job
      burla jobs prune --older-than 7d -y   # durations: 45s, 30m, 12h, 7d
    """
    cutoff = time.time() - older_than if older_than is not None else None
    store = _open_store()
    candidates = [
        r
        for r in (store.check_alive(r) for r in store.list_jobs())
        if r.finished and (cutoff is None or (r.finished_at or 0) < cutoff)
    ]
    if not candidates:
        click.echo("No finished jobs to delete.")
        return
    if not yes:
        click.confirm(f"Delete {len(candidates)} finished job(s) with their logs and results?", abort=True)
    removed = store.prune(cutoff)
    click.echo(f"Deleted {len(removed)} job(s).")
