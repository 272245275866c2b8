"""One call in progress: pumps the scheduler's events, prints output, raises (or returns) errors.

    scheduler.run() ──events──► JobRun._stream ──► RESULTS: (input_index, payload) to the caller
                                      │  LOGS / NOTICE ──► Console (or the detached job's store)
                                      └  ERROR ──► raised (raise_errors) or returned in place

The job starts when the JobRun is made (not at the first next() of a generator), so the first
batches go out at once. Results come back in input order (a list as long as what iterating the
inputs produced, whatever len() said) or in completion order (generator=True).
"""

from __future__ import annotations

import sys
import threading
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Protocol

from .console import Console
from .errors import JobCanceled
from .hookspecs import ProvisionerRecord, SchedulerRecord, TransportRecord
from .interfaces import Provisioner, Scheduler, Transport
from .serialization import exception_for, load_result
from .types import ERROR, LOGS, NOTICE, RESULTS, ErrorInfo, JobProgress, JobSpec


class OutputSink(Protocol):
    """Where a job's output goes: the terminal Console, or the detached runner's job store."""

    def write_logs(self, entries: list) -> None: ...

    def notice(self, text: str) -> None: ...

    def update(self, progress: JobProgress, force: bool = False) -> None: ...

    def close(self) -> None: ...


@dataclass
class Failed:
    """An input's failure, handed back in its place with raise_errors=False."""

    error: BaseException


_MISSING = object()


class JobRun:
    def __init__(
        self,
        job: JobSpec,
        provisioner: Provisioner,
        transport: Transport,
        scheduler: Scheduler,
        indexed_inputs: Iterator,
        input_count: int | None,
        spinner: bool,
        prepickled: bool = False,
        console: OutputSink | None = None,
        error_sink: Callable[[int, ErrorInfo], None] | None = None,
        should_stop: Callable[[], bool] | None = None,
    ) -> None:
        """`error_sink`, when given, receives the first ERROR's (input_index, ErrorInfo) instead
        of it being raised (the detached runner records it); the stream then ends and the rest
        of the job is canceled. `should_stop()` is asked between events (at least every 0.1 s):
        True, or a reason, cancels the job as Ctrl-C would (the detached runner's `burla jobs
        cancel`, a provisioner's `stop_requested`)."""
        self.should_stop = should_stop
        self.job = job
        self.scheduler = scheduler
        self.console: OutputSink = console if console is not None else Console(spinner, job.function_name)
        self.error_sink = error_sink
        self.events = scheduler.run(job, indexed_inputs, input_count, provisioner, transport, prepickled=prepickled)
        try:
            first = next(self.events)
        except StopIteration:
            first = None
        except KeyboardInterrupt:
            self.events.close()
            self.console.close()
            raise self._canceled() from None
        except BaseException:
            self.events.close()
            self.console.close()
            raise
        self._pending_first = first
        self._finished = first is None

    def _canceled(self, reason: str = "Ctrl-C") -> JobCanceled:
        return JobCanceled(f"job {self.job.job_id} ({self.job.function_name}) was canceled ({reason})")

    def _stream(self) -> Iterator[tuple[int, Any]]:
        """(input_index, pickled result or Failed) in completion order; raises the first error
        unless the job was started with raise_errors=False."""
        progress = self.scheduler.progress
        console = self.console
        try:
            event = self._pending_first
            self._pending_first = None
            events = self.events
            while True:
                if event is None:
                    if self._finished:
                        return
                    try:
                        event = next(events)
                    except StopIteration:
                        return
                kind = event[0]
                if kind == RESULTS:
                    yield from event[2]
                elif kind == LOGS:
                    console.write_logs(event[2])
                elif kind == ERROR:
                    input_index, info = event[2]
                    if self.error_sink is not None:
                        self.error_sink(input_index, info)
                        return
                    error = exception_for(input_index, info)
                    if self.job.raise_errors:
                        raise error
                    yield input_index, Failed(error)
                elif kind == NOTICE:
                    console.notice(event[2])
                console.update(progress)
                event = None
                if self.should_stop is not None:
                    stop = self.should_stop()
                    if stop:
                        self.events.close()
                        raise self._canceled(stop if isinstance(stop, str) else "Ctrl-C")
        except KeyboardInterrupt as interrupt:
            if hasattr(interrupt, "burla_input_index"):
                raise  # the function itself raised KeyboardInterrupt: that is its error
            self.events.close()
            raise self._canceled() from None
        finally:
            self.events.close()
            console.close()

    def completed(self) -> Iterator:
        for input_index, payload in self._stream():
            yield _value(input_index, payload)

    def in_input_order(self) -> list:
        results: list = []
        for input_index, payload in self._stream():
            if input_index >= len(results):
                results.extend([_MISSING] * (input_index + 1 - len(results)))
            results[input_index] = _value(input_index, payload)
        total = self.scheduler.progress.total
        if total is not None and total < len(results):
            del results[total:]
        missing = [index for index, value in enumerate(results) if value is _MISSING]
        if missing or (total is not None and len(results) != total):
            raise RuntimeError(  # a scheduler bug: never hand back a silently short or padded list
                f"burla: the job ended without results for inputs {missing[:10]} (scheduler error)"
            )
        return results


def _value(input_index: int, payload: Any) -> Any:
    if isinstance(payload, Failed):
        return payload.error
    return load_result(input_index, payload)


def start_run(
    job: JobSpec,
    records: tuple[ProvisionerRecord, TransportRecord, SchedulerRecord],
    indexed_inputs: Iterator,
    input_count: int | None,
    spinner: bool,
    **kwargs: Any,
) -> JobRun:
    """Build the backend's pieces for `job` and start it."""
    provisioner_record, transport_record, scheduler_record = records
    provisioner = provisioner_record.factory(job.options)
    warn_unsupported(provisioner_record.name, provisioner.honours, job)
    asked = kwargs.pop("should_stop", None)  # the caller's own reason to stop (a detached runner's cancel)

    def should_stop() -> bool | str | None:
        # Both are asked: a provisioner's stop (the dashboard's Stop) holds for a runner's job too.
        return (asked() if asked is not None else None) or provisioner.stop_requested(job)

    kwargs["should_stop"] = should_stop
    return JobRun(
        job,
        provisioner,
        transport_record.factory(job.options),
        scheduler_record.factory(),
        indexed_inputs,
        input_count,
        spinner,
        **kwargs,
    )


_warned: set[tuple[str, str]] = set()
_warned_lock = threading.Lock()


def warn_unsupported(backend: str, honours: frozenset[str], job: JobSpec) -> None:
    """Say once per process and backend that a parameter it cannot honour has no effect."""
    asked = {
        "grow": job.grow,
        "region": job.resources.region is not None,
        "disk_gb": job.resources.disk_gb is not None,
    }
    for name, given in asked.items():
        if not given or name in honours:
            continue
        with _warned_lock:
            if (backend, name) in _warned:
                continue
            _warned.add((backend, name))
        what = "cannot add nodes" if name == "grow" else "boots no nodes"
        print(f"burla: {name}= has no effect on the {backend} backend: it {what}; running on the nodes it has.", file=sys.stderr)
