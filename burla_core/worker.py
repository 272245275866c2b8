"""The worker process: runs the user's function on inputs, one at a time, and reports back.

    pool ──(batch msg)──► [recv]  main thread: for each input: unpickle, call, pickle result
                                        │ results / errors / output left at an input's end
                                        ▼
    pool ◄──(one msg per few ms)── Outbox ◄── sender thread (coalesces, so 10,000 no-op inputs
                                                 cost a few dozen pipe writes, not 10,000)
    pool ◄──(fd 1 / fd 2 pipes)── what the function, its children and C code write (capture.py)

Messages are msgpack lists. Pool → worker: ["job", job, function_bytes, env],
["batch", job, batch_id, [[index, payload], ...]], ["stop"]. Worker → pool: a list of items
["r", job, index, pickled_result], ["l", job, index, stream, output_bytes], ["e", job, index, info],
["d", job, batch_id] (batch finished). A payload is pickle bytes, or a pickle whose big buffers
travel beside it, in memory shared with the pool when the worker has it (channel.py). `env` is
the job's environment variables plus the caller's state: BURLA_CWD, BURLA_SYS_PATH (a list),
BURLA_ENVIRON (a dict); see apply_caller_state.

`current_index` (shared memory) holds the input now running, so that when this process dies the
pool knows which input killed it without a message per input (a worker started by a command gets
that memory as a descriptor, sharedindex.py; in a container it reports each input's start). Cancelation arrives as SIGUSR1 with
the canceled job in `cancel_job`: the handler raises inside the user's function. A function
that returns a coroutine (`async def`) is awaited on the worker's event loop.
"""

from __future__ import annotations

import asyncio
import collections
import faulthandler
import gc
import importlib
import os
import pickle
import select
import signal
import sys
import threading
import time
import types

import msgpack

from .capture import OutputEnds, WorkerOutput, inherited_output_fds, own_pipes
from .channel import decode_input, encode_result
from .envsync.activate import CODE_MODULES_KEY, CODE_PATH_KEY, use_local_code
from .serialization import dumps_payload, error_info, loads, pickles_the_same_later
from .sharedindex import inherited_index
from .types import UNPICKLABLE_RESULT, ErrorInfo

COALESCE_SECONDS = 0.002
AWAKE_SECONDS = 0.02  # how long the worker's sender waits for the next item before it sleeps
_QUIET_TICKS = round(AWAKE_SECONDS / COALESCE_SECONDS)
TIMER_SLACK_NS = 1000  # see precise_timers


def pack(message: list) -> bytes:
    # surrogatepass: an exception message holding a lone surrogate must still travel.
    return msgpack.packb(message, use_bin_type=True, unicode_errors="surrogatepass")


def unpack(data: bytes) -> list:
    return msgpack.unpackb(data, raw=False, unicode_errors="surrogatepass")


def precise_timers() -> None:
    """Let the function's sleeps and timeouts end on time. Linux lets a thread's timers fire up
    to its timer slack late, 50 µs by default, to group wake-ups; a function that waits briefly
    in a loop (polling, rate limits, the 10 ms sleeps of bench/local.py) pays it on every wait:
    0.3-0.5% of 1,000 x 10 ms here. Called on the main thread, which runs the function: threads
    the function starts inherit its slack. Where the kernel has no such file, nothing changes."""
    try:
        with open("/proc/self/timerslack_ns", "w") as slack:
            slack.write(str(TIMER_SLACK_NS))
    except OSError:
        pass


class CancelInput(BaseException):
    """Raised inside the user's function when the pool cancels its job."""


class Outbox:
    """Items for the pool. The main thread adds; a sender thread sends them in coalesced
    messages; `flush` sends at once (batch end).

    The sender stays awake while items keep coming: every COALESCE_SECONDS it sends what has
    gathered, and only after AWAKE_SECONDS with nothing to send does it sleep until the next
    `add` wakes it. So while results flow (one every 10 ms, say), `add` is an append: no
    wake-up on the main thread's path between two calls, where it cost ~30 µs of a 150 µs
    gap here. It sleeps at once when a tick comes late because the call holds the GIL (a
    function computing in Python): awake, each tick would take the GIL from the call. A
    function that returns rarely (over AWAKE_SECONDS) or computes in Python still pays one
    wake-up a result, as before; an idle worker's sender sleeps."""

    def __init__(self, connection) -> None:
        self.connection = connection
        self.items: collections.deque = collections.deque()
        self.send_lock = threading.Lock()
        # The sender sleeps on a held lock that `add` releases: one C call per wake-up, where an
        # Event's set() runs a Condition in Python. This runs after every input, right when
        # the CPU is coldest (after a call that slept, every instruction costs several times more).
        self._wake = threading.Lock()
        self._wake.acquire()
        self._woken = False
        self.wakeups = 0  # times `add` woke the sender (it counts only when it does: not hot)
        thread = threading.Thread(target=self._sender, name="burla-outbox", daemon=True)
        thread.start()

    def add(self, item: list) -> None:
        self.items.append(item)
        if not self._woken:
            self._woken = True
            self.wakeups += 1
            try:
                self._wake.release()
            except RuntimeError:  # another thread (the output relay) woke the sender already
                pass

    def flush(self) -> None:
        with self.send_lock:
            self._send_pending()

    def _send_pending(self) -> None:
        items = self.items
        count = len(items)
        if count:
            batch = [items.popleft() for _ in range(count)]
            for item in batch:
                if item[0] == "R":  # a result left to pickle here (see _run_batch)
                    item[0], item[3] = "r", dumps_payload(item[3])
            try:
                self.connection.send_bytes(pack(batch))
            except (BrokenPipeError, OSError):
                os._exit(0)  # the pool is gone; nobody is left to report to

    def _sender(self) -> None:
        items = self.items
        while True:
            self._wake.acquire()  # asleep until `add` wakes it
            quiet = 0
            while quiet < _QUIET_TICKS:
                woke = time.monotonic()
                time.sleep(COALESCE_SECONDS)
                # Late: the main thread held the GIL (a call computing in Python), and each
                # tick would cost it a forced switch of the GIL. Sleep till the next add instead.
                late = time.monotonic() - woke > 2 * COALESCE_SECONDS
                if items:
                    quiet = 0
                    with self.send_lock:
                        self._send_pending()
                else:
                    quiet += 1
                if late:
                    break
            # Before the last look: one added from now on wakes the sender again.
            self._woken = False
            with self.send_lock:
                self._send_pending()


class WorkerState:
    def __init__(self, current_index, current_job, cancel_job) -> None:
        self.current_index = current_index
        self.current_job = current_job
        self.cancel_job = cancel_job
        self.in_call = False


def _watch_parent(pool_pid: int | None) -> None:
    """Exit when the pool that started this worker is gone (never leak past it). The worker's
    parent is the pool's process under fork and spawn, and the forkserver (which exits with the
    pool) under forkserver: the parent leaving, or the pool's process, is the signal."""
    parent = os.getppid()
    while True:
        time.sleep(0.25)
        if os.getppid() != parent:
            os._exit(1)
        if pool_pid is not None and pool_pid != parent:
            try:
                os.kill(pool_pid, 0)
            except ProcessLookupError:
                os._exit(1)
            except PermissionError:
                pass


def _watch_inbox(fd: int) -> None:
    """Exit when the pool's end of the inbox is closed, even in the middle of a call: for a
    worker in a container, whose parent is the container's init, not the pool."""
    poll = select.poll()
    poll.register(fd, 0)  # hang-up and errors are always reported; data is not asked for
    while True:
        try:
            events = poll.poll()
        except InterruptedError:
            continue
        if any(event & (select.POLLHUP | select.POLLERR | select.POLLNVAL) for _, event in events):
            os._exit(0)


def apply_caller_state(job_env: dict, worker_env: dict) -> None:
    """Make this worker see the caller as of the call: its current directory (BURLA_CWD), its
    sys.path (BURLA_SYS_PATH) and its whole environment (BURLA_ENVIRON), plus the job's own
    variables; the worker's own variables (CUDA_VISIBLE_DEVICES of a GPU worker) win."""
    job_env = dict(job_env)
    cwd = job_env.pop("BURLA_CWD", None)
    sys_path = job_env.pop("BURLA_SYS_PATH", None)
    environ = job_env.pop("BURLA_ENVIRON", None)
    if environ is None:
        os.environ.update(job_env)
        os.environ.update(worker_env)
    else:
        _set_environment({**environ, **job_env, **worker_env})
    if cwd and cwd != os.getcwd() and os.path.isdir(cwd):
        os.chdir(cwd)  # a warm worker follows the caller's current directory
    if sys_path is not None and sys_path != sys.path:
        sys.path[:] = sys_path
        importlib.invalidate_caches()


_applied_environment: tuple[dict | None, dict | None] = (None, None)


def _set_environment(wanted: dict) -> None:
    """os.environ becomes `wanted`; nothing is done when it already is (the common case: a warm
    worker, an unchanged caller), checked with C-level dict compares instead of per variable."""
    global _applied_environment
    raw = getattr(os.environ, "_data", None)  # CPython's encoded store
    last_wanted, last_raw = _applied_environment
    if isinstance(raw, dict) and wanted == last_wanted and raw == last_raw:
        return
    current = dict(os.environ)
    for name in current.keys() - wanted.keys():
        del os.environ[name]
    for name, value in wanted.items():
        if current.get(name) != value:
            os.environ[name] = value
    _applied_environment = (wanted, dict(raw) if isinstance(raw, dict) else None)


def worker_main(
    inbox,
    outbox_connection,
    current_index,
    current_job,
    cancel_job,
    env: dict,
    parent_pid: int | None,
    outbox_ref=None,
    arenas=None,
    output_ends: OutputEnds | None = None,
) -> None:
    """`output_ends`: the pipes the pool reads this worker's output from; without them (a
    worker in a container) the worker makes its own and sends what they carry itself."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the caller's to handle
    precise_timers()
    os.environ.update(env)
    if parent_pid is not None:
        threading.Thread(target=_watch_parent, args=(parent_pid,), name="burla-parent-watch", daemon=True).start()
    else:
        threading.Thread(target=_watch_inbox, args=(inbox.fileno(),), name="burla-inbox-watch", daemon=True).start()
    state = WorkerState(current_index, current_job, cancel_job)
    shares_memory = outbox_ref is None

    def on_cancel(signum, frame) -> None:
        if not shares_memory:  # the pool cannot say which job; it signals only the one running
            state.cancel_job.value = state.current_job.value
        if state.in_call and state.cancel_job.value == state.current_job.value:
            raise CancelInput()

    signal.signal(signal.SIGUSR1, on_cancel)
    outbox = Outbox(outbox_connection)
    if outbox_ref is not None:
        outbox_ref.append(outbox)
    if output_ends is None:

        def relay(items: list) -> None:
            for item in items:
                outbox.add(item)
            outbox.flush()  # at once: nothing but this process holds these bytes now

        output = WorkerOutput(own_pipes(inherited_output_fds()), relay)
    else:
        output = WorkerOutput(output_ends)
    faulthandler.enable(all_threads=False)  # a crash in native code prints where, to the captured stderr
    gc.freeze()  # objects inherited from the caller (fork) are never traversed, so never copied
    function = None
    load_error = None
    loaded_job = None
    while True:
        try:
            message = unpack(inbox.recv_bytes())
        except (EOFError, OSError):
            os._exit(0)
        kind = message[0]
        if kind == "batch":
            _, job, batch_id, items = message
            if job != loaded_job:
                raise RuntimeError(f"batch for job {job} arrived before its function")
            if load_error is not None:
                # The function did not unpickle here (a module missing on this machine): each
                # input fails with that error instead of the worker dying over and over.
                for input_index, _ in items:
                    outbox.add(["e", job, input_index, load_error])
            else:
                _run_batch(function, job, items, state, outbox, output, arenas)
            outbox.add(["d", job, batch_id])
            outbox.flush()
        elif kind == "job":
            _, loaded_job, function_bytes, job_env = message
            use_local_code(job_env.pop(CODE_PATH_KEY, None), job_env.pop(CODE_MODULES_KEY, None))
            apply_caller_state(job_env, env)
            output.start_job(loaded_job)  # what unpickling the function prints is the job's
            try:
                function, load_error = pickle.loads(function_bytes), None
            except Exception as error:
                function, load_error = None, error_info(error, skip_frames=0).to_wire()
            output.end_input(outbox.add)
        elif kind == "stop":
            outbox.flush()
            os._exit(0)


def _run_batch(function, job, items, state, outbox, output: WorkerOutput, arenas) -> None:
    state.current_job.value = job
    if isinstance(state.current_index, _ReportingIndex):
        state.current_index.job = job
    add = outbox.add
    start_input, end_input = output.start_input, output.end_input
    for input_index, payload in items:
        if state.cancel_job.value == job:
            return
        state.current_index.value = input_index
        start_input(input_index)
        coroutine_code = None
        try:
            try:
                state.in_call = True
                result = function(*(pickle.loads(payload) if type(payload) is bytes else loads(decode_input(payload, arenas))))
                if type(result) is _COROUTINE:  # an async def function: await it here
                    coroutine_code = result.cr_code
                    result = _await(result)
                state.in_call = False
            except CancelInput:
                raise
            except BaseException as error:  # the user's error, whatever it is, goes to the caller
                state.in_call = False
                end_input(add)
                add(["e", job, input_index, _error_of_call(error, coroutine_code).to_wire()])
                continue
            end_input(add)
            if pickles_the_same_later(result):
                # Pickled by the sender thread, while the next call runs: right after a call
                # that slept, pickling even a number costs ~50 µs of this thread's time.
                add(["R", job, input_index, result])
                continue
            try:
                add(["r", job, input_index, encode_result(dumps_payload(result), arenas, outbox.flush)])
            except Exception as error:
                add(["e", job, input_index, error_info(error, 0, kind=UNPICKLABLE_RESULT).to_wire()])
        except CancelInput:
            state.in_call = False
            output.end_input(add)
            return
        finally:
            state.current_index.value = -1


def _error_of_call(error: BaseException, coroutine_code) -> ErrorInfo:
    """The error's info with a traceback that starts in the user's function: this module's
    frame (the call site) is hidden, and so is asyncio's machinery around a coroutine."""
    if coroutine_code is not None:
        tb = error.__traceback__
        while tb is not None and tb.tb_frame.f_code is not coroutine_code:
            tb = tb.tb_next
        if tb is not None:
            return error_info(error.with_traceback(tb), skip_frames=0)
    return error_info(error, skip_frames=1)


_COROUTINE = types.CoroutineType
_runner: asyncio.Runner | None = None


def _await(coroutine):
    """Run a coroutine on this worker's event loop: one loop per worker, kept between calls
    (so a client made by one call can be reused by the next), replaced after a cancel."""
    global _runner
    if _runner is None:
        _runner = asyncio.Runner()
    try:
        return _runner.run(coroutine)
    except CancelInput:
        runner, _runner = _runner, None
        runner.close()  # cancels what the call left running
        raise


class _ReportingIndex:
    """`current_index` for a worker without memory shared with its pool (one in a container):
    each input's start is reported at once, so the pool still knows which input killed it."""

    def __init__(self, outbox_ref: list) -> None:
        self._value = -1
        self._outbox_ref = outbox_ref
        self.job = 0

    @property
    def value(self) -> int:
        return self._value

    @value.setter
    def value(self, index: int) -> None:
        self._value = index
        if index >= 0 and self._outbox_ref:
            outbox = self._outbox_ref[0]
            outbox.add(["s", self.job, index])
            outbox.flush()


class _PlainValue:
    def __init__(self, value: int) -> None:
        self.value = value


def stdio_main() -> None:
    """`python -m burla_core.worker --stdio`: a worker speaking the pool's protocol over stdin and
    stdout, for workers the pool cannot fork (inside a container image). The protocol moves to
    other descriptors; fds 1 and 2 become the worker's own output pipes (capture.py), so what the
    function, C extensions or subprocesses write there is captured, never mixed into it."""
    from multiprocess.connection import Connection

    inbox = Connection(os.dup(0), writable=False)
    outbox_connection = Connection(os.dup(1), readable=False)
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    outbox_ref: list = []
    current_index = inherited_index()  # memory shared with the pool, where it could pass some
    if current_index is None:
        current_index = _ReportingIndex(outbox_ref)
    worker_main(
        inbox,
        outbox_connection,
        current_index,
        _PlainValue(0),
        _PlainValue(0),
        {},
        parent_pid=None,
        outbox_ref=outbox_ref,
    )


if __name__ == "__main__":
    if "--stdio" in sys.argv[1:]:
        stdio_main()
    else:
        sys.exit("usage: python -m burla_core.worker --stdio  (started by a burla worker pool)")
