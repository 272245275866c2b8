"""`remote_parallel_map`: validate everything that can be checked here, then run the job through
the selected backend's scheduler, printing the function's output as it arrives."""

from __future__ import annotations

import uuid
from typing import Any, Callable, Iterable, Iterator

from . import config, plugins
from .console import Console
from .errors import InvalidArgument, JobCanceled, UnpicklableResult, WorkerDied
from .gpus import validate_gpu_name
from .interfaces import Provisioner, Scheduler, Transport
from .serialization import Payload, describe, dumps_function, loads, rebuild_exception
from .types import ERROR, LOGS, NOTICE, RESULTS, JobSpec, ResourceRequest



def remote_parallel_map(
    function_: Callable,
    inputs: Iterable,
    func_cpu: int = 1,
    func_ram: int = 4,
    func_gpu: str | None = None,
    image: str | None = None,
    grow: bool = False,
    max_parallelism: int | None = None,
    detach: bool = False,
    generator: bool = False,
    spinner: bool = True,
    *,
    backend: str | None = None,
    backend_options: dict | None = None,
) -> list | Iterator:
    """Run `function_` on every element of `inputs` at once on all available workers.

    A tuple input is unpacked into `*args`; anything else is passed as one argument. Returns the
    results in input order, or with `generator=True` a generator yielding them as they complete.
    The function's stdout/stderr appear here as it writes them, and its first exception is
    raised here as the original type, with `burla_input_index` set and the remote traceback
    chained. `backend=` (ours) picks the backend: else $BURLA_BACKEND, the config file, "local".
    """
    job, records, input_count, indexed_inputs = prepare_job(
        function_, inputs, func_cpu, func_ram, func_gpu, image, grow, max_parallelism, detach, backend, backend_options
    )
    if detach:
        from .detach import run_detached

        return run_detached(job, records, indexed_inputs, input_count, generator=generator, spinner=spinner)
    provisioner_record, transport_record, scheduler_record = records
    run = JobRun(
        job,
        provisioner_record.factory(job.options),
        transport_record.factory(job.options),
        scheduler_record.factory(),
        indexed_inputs,
        input_count,
        spinner,
    )
    if generator:
        return run.completed()
    return run.in_input_order()


def _check_int(name: str, value: Any, minimum: int, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    if type(value) is not int or value < minimum:
        kind = "None or an int" if allow_none else "an int"
        raise InvalidArgument(f"{name} must be {kind} >= {minimum}; got {describe(value)}")


def _check_bool(name: str, value: Any) -> None:
    if not isinstance(value, bool):
        raise InvalidArgument(f"{name} must be True or False; got {describe(value)}")


def prepare_job(function_, inputs, func_cpu, func_ram, func_gpu, image, grow, max_parallelism, detach, backend, backend_options):
    _check_int("func_cpu", func_cpu, 1)
    _check_int("func_ram", func_ram, 1)
    _check_int("max_parallelism", max_parallelism, 1, allow_none=True)
    for name, value in (("grow", grow), ("detach", detach)):
        _check_bool(name, value)
    gpu_family = validate_gpu_name(func_gpu)
    if image is not None and (not isinstance(image, str) or not image.strip()):
        raise InvalidArgument(f"image must be a container image name like 'python:3.11'; got {describe(image)}")
    if backend_options is not None and not isinstance(backend_options, dict):
        raise InvalidArgument(f"backend_options must be a dict; got {describe(backend_options)}")
    if isinstance(inputs, (str, bytes, bytearray, dict)) or not hasattr(inputs, "__iter__"):
        raise InvalidArgument(
            f"inputs must be a list (or another iterable) of inputs; got {type(inputs).__name__} "
            f"{describe(inputs)}. Wrap a single input in a list: [x]."
        )
    records = plugins.resolve_backend(config.selected_backend(backend))
    function_bytes = dumps_function(function_)
    try:
        input_count = len(inputs)  # type: ignore[arg-type]
    except TypeError:
        input_count = None
    job = JobSpec(
        job_id=uuid.uuid4().hex[:12],
        function_bytes=function_bytes,
        function_name=getattr(function_, "__qualname__", None) or type(function_).__name__,
        resources=ResourceRequest(func_cpu, func_ram, gpu_family, image),
        max_parallelism=max_parallelism,
        detach=detach,
        grow=grow,
        options=dict(backend_options or {}),
    )
    return job, records, input_count, enumerate(inputs)


def error_from_info(input_index: int, info: dict) -> BaseException:
    """The exception to raise in the caller for an ERROR event."""
    if info.get("worker_died"):
        return WorkerDied(
            f"input {input_index}: the worker running it {info['how']}, and again when it was retried "
            "on a new worker. The function may be exiting the process, crashing in native code, or "
            "using more memory than func_ram allows.",
            input_index,
            info["how"],
        )
    if info.get("unpicklable_result"):
        return UnpicklableResult(
            f"the return value of input {input_index} cannot be pickled ({info['type_name']}: {info['message']}); "
            "return plain data (numbers, strings, lists, dicts, arrays) instead",
            input_index,
        )
    return rebuild_exception(info, input_index)


class JobRun:
    """One call in progress: pumps the scheduler's events, prints output, raises errors."""

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
        console: Console | None = None,
        error_sink: Callable[[int, dict], None] | None = None,
    ) -> None:
        """`console` replaces the terminal Console (anything with its write_logs / notice /
        update / close methods: the detached runner's writes them to the job store).
        `error_sink`, when given, receives the first ERROR event's (input_index, info dict)
        instead of it being raised; the stream then ends and the rest of the job is canceled."""
        self.job = job
        self.input_count = input_count
        self.scheduler = scheduler
        self.console = console if console is not None else Console(spinner, job.function_name)
        self.error_sink = error_sink
        kwargs = {"prepickled": True} if prepickled else {}
        self.events = scheduler.run(job, indexed_inputs, input_count, provisioner, transport, **kwargs)
        # Start now (not at the first next() of a generator): the first batches go out at once.
        self._pending_first: list | None = None
        try:
            first = next(self.events)
        except StopIteration:
            first = None
        except BaseException:
            self.console.close()
            raise
        self._pending_first = first
        self._finished = first is None

    def _stream(self) -> Iterator[tuple[int, bytes]]:
        """(input_index, pickled_result) in completion order; raises the first error."""
        progress = getattr(self.scheduler, "progress", None)
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
                    raise error_from_info(input_index, info)
                elif kind == NOTICE:
                    console.notice(event[2])
                if progress is not None:
                    console.update(progress)
                event = None
        except KeyboardInterrupt as interrupt:
            if hasattr(interrupt, "burla_input_index"):
                raise  # the function itself raised KeyboardInterrupt: that is its error
            self.events.close()
            raise JobCanceled(f"job {self.job.job_id} ({self.job.function_name}) was canceled (Ctrl-C)") from None
        finally:
            self.events.close()
            console.close()

    def completed(self) -> Iterator:
        for input_index, payload in self._stream():
            yield _load_result(input_index, payload)

    def in_input_order(self) -> list:
        if self.input_count is not None:
            results: list = [None] * self.input_count
            for input_index, payload in self._stream():
                results[input_index] = _load_result(input_index, payload)
            return results
        by_index = {}
        for input_index, payload in self._stream():
            by_index[input_index] = _load_result(input_index, payload)
        return [by_index[i] for i in range(len(by_index))]


def _load_result(input_index: int, payload: Payload | memoryview) -> Any:
    try:
        return loads(payload)
    except Exception as error:
        raise UnpicklableResult(
            f"the return value of input {input_index} cannot be unpickled here ({type(error).__name__}: {error}); "
            "is the module that defines its type importable on this machine?",
            input_index,
        ) from error
