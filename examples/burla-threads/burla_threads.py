"""burla-threads: an example Burla backend that runs calls on threads of the calling process.

    remote_parallel_map(f, inputs, backend="threads", backend_options={"threads": 8})

It is the smallest complete backend: a provisioner (one node: this process, `threads` slots), a
transport whose sessions run batches on a thread pool and report RESULTS / LOGS / ERROR events,
the hook implementations that register them, and a test environment for the conformance suite. It shows the contract, not a way to run
heavy work: threads share the GIL and the process, so it cannot enforce func_ram, cannot stop a
call that is running (cancel only drops queued inputs), and a call that exits the process
(os._exit) takes the caller with it.
"""

from __future__ import annotations

import concurrent.futures
import io
import pickle
import sys
import threading
import time
from contextlib import contextmanager

from burla_core import hookimpl
from burla_core.errors import NoCompatibleNodes
from burla_core.hookspecs import ProvisionerRecord, TestEnvironment, TestEnvironmentRecord, TransportRecord
from burla_core.interfaces import NodeSession, Provisioner, Transport
from burla_core.serialization import dumps_payload, error_info, loads
from burla_core.types import (
    ERROR,
    LOGS,
    RESULTS,
    UNPICKLABLE_RESULT,
    EventSink,
    InputBatch,
    JobSpec,
    NodeInfo,
    ResourceRequest,
)

DEFAULT_THREADS = 4


# --- where work can run -------------------------------------------------------------------------


class ThreadsProvisioner(Provisioner):
    """One node, this process, with `backend_options["threads"]` threads (default 4)."""

    def eligible_nodes(self, request: ResourceRequest) -> list[NodeInfo]:
        threads = int(self.options.get("threads", DEFAULT_THREADS))
        if request.func_gpu is not None or request.image is not None:
            raise NoCompatibleNodes("the threads backend has no GPUs and runs no container images")
        slots = threads // request.func_cpu
        if slots < 1:
            raise NoCompatibleNodes(f"func_cpu={request.func_cpu} needs more than the {threads} threads configured")
        return [NodeInfo(node_id="threads", cpus=threads, ram_gb=0.0, slots=slots)]


# --- output: each call's print() becomes LOGS events -------------------------------------------

_running = threading.local()  # .output: the _CallOutput of the call this thread runs, if any


class _CallOutput:
    """What one call writes, sent as whole lines tagged with its input index."""

    def __init__(self, events: EventSink, node_id: str, input_index: int) -> None:
        self.events, self.node_id, self.input_index = events, node_id, input_index
        self.partial = {1: "", 2: ""}

    def write(self, stream: int, text: str) -> None:
        whole, newline, rest = (self.partial[stream] + text).rpartition("\n")
        if newline:
            self.events.put([LOGS, self.node_id, [(self.input_index, stream, whole + "\n")]])
        self.partial[stream] = rest  # no newline: rpartition leaves everything in `rest`

    def end(self) -> None:
        for stream, text in self.partial.items():
            if text:
                self.events.put([LOGS, self.node_id, [(self.input_index, stream, text + "\n")]])
        self.partial = {1: "", 2: ""}


class _ThreadRoutedStream(io.TextIOBase):
    """Replaces sys.stdout / sys.stderr: a thread running a call writes to that call's output,
    every other thread (the caller printing those lines, for one) to the stream it replaced."""

    def __init__(self, stream: int, original) -> None:
        self.stream, self.original = stream, original

    def write(self, text: str) -> int:
        output = getattr(_running, "output", None)
        if output is None:
            return self.original.write(text)
        output.write(self.stream, text)
        return len(text)

    def flush(self) -> None:
        if getattr(_running, "output", None) is None:
            self.original.flush()

    def writable(self) -> bool:
        return True

    def __getattr__(self, name):  # encoding, fileno, isatty, ...
        return getattr(self.original, name)


def _route_output() -> None:
    if not isinstance(sys.stdout, _ThreadRoutedStream):
        sys.stdout = _ThreadRoutedStream(1, sys.stdout)
    if not isinstance(sys.stderr, _ThreadRoutedStream):
        sys.stderr = _ThreadRoutedStream(2, sys.stderr)


# --- how work travels: one session per job ------------------------------------------------------


class ThreadsSession(NodeSession):
    def __init__(self, node: NodeInfo, job: JobSpec, slots: int, events: EventSink) -> None:
        self.node_id, self.slots, self.events = node.node_id, slots, events
        self.function = pickle.loads(job.function_bytes)
        self.executor = concurrent.futures.ThreadPoolExecutor(slots, thread_name_prefix=f"burla-{job.job_id}")
        self.canceled = threading.Event()
        self.lock = threading.Lock()
        self.running = 0
        _route_output()

    def submit(self, batch: InputBatch) -> None:
        self.executor.submit(self._run_batch, batch.items)

    def _run_batch(self, items: list[tuple[int, bytes]]) -> None:
        with self.lock:
            self.running += 1
        try:
            for input_index, payload in items:
                if self.canceled.is_set():
                    return
                self._run_one(input_index, payload)
        finally:
            with self.lock:
                self.running -= 1

    def _run_one(self, input_index: int, payload: bytes) -> None:
        output = _running.output = _CallOutput(self.events, self.node_id, input_index)
        try:
            result = self.function(*loads(payload))  # payload: the pickled args tuple
        except BaseException as error:  # whatever the function raises is the caller's
            output.end()
            if not self.canceled.is_set():
                # skip_frames=1 hides this frame: the traceback starts in the user's code.
                self.events.put([ERROR, self.node_id, (input_index, error_info(error, skip_frames=1))])
            return
        finally:
            _running.output = None
        output.end()
        try:
            result_bytes = dumps_payload(result)
        except Exception as error:  # core raises UnpicklableResult for this kind
            self.events.put([ERROR, self.node_id, (input_index, error_info(error, 0, kind=UNPICKLABLE_RESULT))])
            return
        if not self.canceled.is_set():
            self.events.put([RESULTS, self.node_id, [(input_index, result_bytes)]])

    def cancel(self) -> None:
        # Threads cannot be interrupted: drop what is queued; running calls finish unreported.
        self.canceled.set()
        self.executor.shutdown(wait=False, cancel_futures=True)

    def is_stopped(self) -> bool:
        with self.lock:
            return self.running == 0

    def close(self) -> None:
        self.cancel()

    def wait_stopped(self, timeout: float) -> bool:
        # Called after close(): remote_parallel_map returns only once nothing of the job runs.
        deadline = time.monotonic() + timeout
        while not self.is_stopped():
            if time.monotonic() > deadline:
                return False
            time.sleep(0.005)
        return True


class ThreadsTransport(Transport):
    def open_session(self, node: NodeInfo, job: JobSpec, slots: int, events: EventSink) -> NodeSession:
        return ThreadsSession(node, job, slots, events)


# --- registration: the two hooks this plugin implements -----------------------------------------


@hookimpl
def burla_register_provisioners(register) -> None:
    register(
        ProvisionerRecord(
            name="threads",
            factory=ThreadsProvisioner,
            transport="threads",
            description="threads of the calling process (an example plugin)",
        )
    )


@hookimpl
def burla_register_transports(register) -> None:
    register(TransportRecord(name="threads", factory=ThreadsTransport))


@contextmanager
def threads_test_environment():
    # `pytest --pyargs conformance_tests --burla-backend threads`: nothing to start, 4 threads.
    yield TestEnvironment(backend_options={"threads": "4"})


@hookimpl
def burla_register_test_environments(register) -> None:
    register(TestEnvironmentRecord(backend="threads", factory=threads_test_environment))
