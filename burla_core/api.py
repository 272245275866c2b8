"""`remote_parallel_map`: validate everything that can be checked here, then run the job through
the selected backend's scheduler (burla_core.run), printing the function's output as it arrives."""

from __future__ import annotations

import re
import uuid
from typing import Any, Callable, Iterable, Iterator

from . import config, plugins
from .errors import InvalidArgument
from .gpus import validate_gpu_name
from .run import start_run
from .serialization import describe, dumps_function
from .types import JobSpec, ResourceRequest

REGION_PATTERN = re.compile(r"^[a-z]+(-[a-z]+)+[0-9]+$")  # "us-central1", "europe-west4"
MIN_DISK_GB, MAX_DISK_GB = 10, 65_536  # what a GCE boot disk can be


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
    region: str | None = None,
    disk_gb: int | None = None,
    *,
    backend: str | None = None,
    backend_options: dict | None = None,
    raise_errors: bool = True,
) -> list | Iterator:
    """Run `function_` on every element of `inputs` at once on all available workers.

    A tuple input is unpacked into `*args`; anything else is passed as one argument. Returns the
    results in input order, or with `generator=True` a generator yielding them as they complete.
    The function's stdout/stderr appear here as it writes them, and its first exception is
    raised here as the original type, with `burla_input_index` set, the remote traceback chained
    and the note `[burla] failed on input index N`. `region` and `disk_gb` apply to nodes booted
    by `grow=True`. Ours, keyword-only: `backend=` picks the backend (else $BURLA_BACKEND, the
    config file, "local"); `backend_options=` is passed to it; `raise_errors=False` returns each
    failed input's exception in its place instead of raising, and does not cancel the job.
    """
    job, records, input_count, indexed_inputs = prepare_job(
        function_, inputs, func_cpu, func_ram, func_gpu, image, grow, max_parallelism, detach,
        region, disk_gb, backend, backend_options, raise_errors,
    )
    if detach:
        from .detach import run_detached

        return run_detached(job, records, indexed_inputs, input_count, generator=generator, spinner=spinner)
    run = start_run(job, records, indexed_inputs, input_count, spinner)
    if generator:
        return run.completed()
    return run.in_input_order()


def _check_int(name: str, value: Any, minimum: int, allow_none: bool = False, maximum: int | None = None) -> None:
    if value is None and allow_none:
        return
    kind = "None or an int" if allow_none else "an int"
    if type(value) is not int or value < minimum or (maximum is not None and value > maximum):
        bounds = f">= {minimum}" if maximum is None else f"from {minimum} to {maximum}"
        raise InvalidArgument(f"{name} must be {kind} {bounds}; got {describe(value)}")


def _check_bool(name: str, value: Any) -> None:
    if not isinstance(value, bool):
        raise InvalidArgument(f"{name} must be True or False; got {describe(value)}")


def prepare_job(
    function_, inputs, func_cpu, func_ram, func_gpu, image, grow, max_parallelism, detach,
    region=None, disk_gb=None, backend=None, backend_options=None, raise_errors=True,
):
    _check_int("func_cpu", func_cpu, 1)
    _check_int("func_ram", func_ram, 1)
    _check_int("max_parallelism", max_parallelism, 1, allow_none=True)
    _check_int("disk_gb", disk_gb, MIN_DISK_GB, allow_none=True, maximum=MAX_DISK_GB)
    for name, value in (("grow", grow), ("detach", detach), ("raise_errors", raise_errors)):
        _check_bool(name, value)
    gpu_family = validate_gpu_name(func_gpu)
    if image is not None and (not isinstance(image, str) or not image.strip()):
        raise InvalidArgument(f"image must be a container image name like 'python:3.11'; got {describe(image)}")
    if region is not None and (not isinstance(region, str) or not REGION_PATTERN.match(region)):
        raise InvalidArgument(f"region must be a cloud region name like 'us-central1'; got {describe(region)}")
    if backend_options is not None and not isinstance(backend_options, dict):
        raise InvalidArgument(f"backend_options must be a dict; got {describe(backend_options)}")
    if isinstance(inputs, (str, bytes, bytearray, dict)) or not hasattr(inputs, "__iter__"):
        raise InvalidArgument(
            f"inputs must be a list (or another iterable) of inputs; got {type(inputs).__name__} "
            f"{describe(inputs)}. Wrap a single input in a list: [x]."
        )
    choice = config.backend_choice(backend)
    records = plugins.resolve_backend(choice.name, choice.source, choice.fix)
    function_bytes = dumps_function(function_)
    try:
        input_count = len(inputs)  # type: ignore[arg-type]  # a hint for batch sizes and the progress line
    except Exception:
        input_count = None
    job = JobSpec(
        job_id=uuid.uuid4().hex[:12],
        function_bytes=function_bytes,
        function_name=getattr(function_, "__qualname__", None) or type(function_).__name__,
        resources=ResourceRequest(
            func_cpu, func_ram, gpu_family, image, region=region, disk_gb=disk_gb, func_gpu_name=func_gpu, grow=grow
        ),
        max_parallelism=max_parallelism,
        detach=detach,
        grow=grow,
        raise_errors=raise_errors,
        options=dict(backend_options or {}),
        input_count=input_count,
    )
    return job, records, input_count, enumerate(inputs)
