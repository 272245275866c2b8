"""Big inputs and results: out-of-band pickles, the shared-memory arenas between the pool and its
forked workers, the stdio path of container workers, and what is left after a worker or its
caller is SIGKILLed in the middle of a transfer (nothing: no fd, no mapping, no /dev/shm file)."""

from __future__ import annotations

import json
import os
import pickle
import signal
import subprocess
import sys
import threading
import time

import pytest

import burla
from burla import remote_parallel_map
from burla_core import channel, pool as pool_module
from burla_core.serialization import OUT_OF_BAND_BYTES, OutOfBandPickle, as_one_pickle, dumps_input, dumps_payload, loads

from .conftest import TESTS_DIR, python_env

MB = 1000 * 1000
BIG = 3 * MB  # over OUT_OF_BAND_BYTES: travels beside the pickle


def rpm(*args, **kwargs):
    kwargs.setdefault("spinner", False)
    return remote_parallel_map(*args, **kwargs)


def echo(value):
    return value


class Blob:
    """A type whose reducer hands pickle a PickleBuffer, as numpy arrays do (without numpy)."""

    def __init__(self, data: bytearray) -> None:
        self.data = data

    def __reduce_ex__(self, protocol):
        return Blob, (pickle.PickleBuffer(self.data),)

    def __eq__(self, other):
        return type(other) is Blob and bytes(self.data) == bytes(other.data)


def big_values() -> dict:
    data = os.urandom(BIG)
    return {
        "bytes": data,
        "bytearray": bytearray(data),
        "memoryview": memoryview(bytearray(data)),
        "memoryview of ints, 2-d": memoryview(bytearray(data[: 4 * 1000 * 500])).cast("i", (1000, 500)),
        "small memoryview": memoryview(b"abc"),
        "tuple holding bytes": (data, 7, "x"),
        "PickleBuffer type": Blob(bytearray(data)),
        "list of bytes (inside the pickle)": [data[:1000], data],
    }


def same(a, b) -> bool:
    if isinstance(a, memoryview):
        return isinstance(b, memoryview) and a.format == b.format and a.shape == b.shape and a.tobytes() == b.tobytes()
    return type(a) is type(b) and a == b


# --- pickling ----------------------------------------------------------------------------------


def test_big_buffers_pickle_out_of_band_and_small_values_stay_plain_bytes():
    for name, value in big_values().items():
        payload = dumps_payload(value)
        if name in ("small memoryview", "list of bytes (inside the pickle)"):
            assert type(payload) is bytes, name
        else:
            assert type(payload) is OutOfBandPickle, name
            assert len(payload.data) < 1000, f"{name}: the buffer was copied into the pickle ({len(payload.data)} bytes)"
            assert len(payload) - len(payload.data) >= 2 * MB, f"{name}: its buffers are not beside the pickle"
        assert same(loads(payload), value), name
        # One self-contained blob (the job store's form) gives the same value to plain pickle.
        assert same(pickle.loads(as_one_pickle(payload)), value), name
    assert type(dumps_payload(b"x" * (OUT_OF_BAND_BYTES - 1))) is bytes
    assert type(dumps_input(0, 5)) is bytes and pickle.loads(dumps_input(0, 5)) == (5,)


def test_contents_of_bytes_are_flagged_so_receivers_can_hand_them_over_as_bytes():
    data = os.urandom(BIG)
    payload = dumps_input(3, (data, bytearray(data)))
    assert payload.is_bytes == [True, False]
    # What a receiver does with a flagged buffer: a bytes object, taken as it is on loading.
    received = OutOfBandPickle(payload.data, [bytes(payload.buffers[0]), bytearray(payload.buffers[1])], payload.is_bytes)
    first, second = loads(received)
    assert first is received.buffers[0] and second == bytearray(data)


# --- the local backend: forked workers and their arenas ------------------------------------------


def test_big_results_of_every_form_round_trip_on_the_local_backend():
    values = big_values()
    results = rpm(echo, [(value,) for value in values.values()])
    for (name, value), result in zip(values.items(), results):
        assert same(result, value), f"{name}: got {type(result).__name__}"


def test_numpy_arrays_round_trip_through_shared_memory():
    numpy = pytest.importorskip("numpy")
    arrays = [numpy.arange(2 * MB, dtype=numpy.float64), numpy.arange(12.0).reshape(3, 4), numpy.zeros((1000, 300), order="F")]

    def double(array):
        return array * 2

    for array, result in zip(arrays, rpm(double, arrays)):
        assert result.dtype == array.dtype and result.shape == array.shape and (result == array * 2).all()
        assert result.flags.writeable


def test_a_big_input_and_its_result_travel_through_the_worker_arenas():
    data = os.urandom(20 * MB)
    assert rpm(echo, [data]) == [data]
    workers = list(pool_module.shared_pool()._live.values())
    used = [w for w in workers if w.arenas is not None and w.arenas.inbox.holds_pages and w.arenas.outbox.holds_pages]
    assert used, "no worker moved the payload through its arenas"


def test_big_payloads_come_back_in_input_order_with_many_per_batch():
    inputs = [os.urandom(OUT_OF_BAND_BYTES + i) for i in range(12)]
    assert rpm(echo, inputs, max_parallelism=1) == inputs
    assert rpm(echo, inputs) == inputs


def test_workers_give_back_arena_pages_once_idle(monkeypatch):
    monkeypatch.setattr(channel, "ARENA_KEEP_SECONDS", 0.3)
    assert rpm(echo, [os.urandom(5 * MB)])[0]
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        workers = list(pool_module.shared_pool()._live.values())
        if not any(w.arenas is not None and w.arenas.holds_pages for w in workers):
            return
        time.sleep(0.05)
    pytest.fail("idle workers still hold their arena pages")


def _arena_holders(prefix: str) -> dict[int, set[str]]:
    """pid -> arena names it holds (an open fd or a mapping), for arenas named `prefix`..."""
    held: dict[int, set[str]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        pid = int(entry)
        names: set[str] = set()
        try:
            for fd in os.listdir(f"/proc/{pid}/fd"):
                try:
                    target = os.readlink(f"/proc/{pid}/fd/{fd}")
                except OSError:
                    continue
                if target.startswith(f"/memfd:{prefix}"):
                    names.add(target.split(":", 1)[1].split(" ")[0])
            with open(f"/proc/{pid}/maps") as maps:
                for line in maps:
                    if f"/memfd:{prefix}" in line:
                        names.add(line.split("/memfd:", 1)[1].split(" ")[0].strip())
        except (OSError, ProcessLookupError):
            continue
        if names:
            held[pid] = names
    return held


def _running(pid: int) -> bool:
    """Alive and not a zombie (dead, waiting only to be reaped by whoever adopted it)."""
    try:
        with open(f"/proc/{pid}/status") as status:
            return next(line for line in status if line.startswith("State:")).split()[1] != "Z"
    except (OSError, StopIteration):
        return False


def _shm_entries() -> set[str]:
    """Shared-memory files that could be ours. multiprocessing's named semaphores ("sem.*") are
    left out: other programs on the machine make and drop them at any time, and burla's arenas are
    memfds, never named files."""
    if not os.path.isdir("/dev/shm"):
        return set()
    return {name for name in os.listdir("/dev/shm") if not name.startswith("sem.")}


linux_only = pytest.mark.skipif(not channel.arenas_supported(), reason="memfd arenas are Linux-only")


@linux_only
def test_no_arena_outlives_workers_killed_mid_transfer():
    shm_before = _shm_entries()
    shared = pool_module.shared_pool()
    data = os.urandom(40 * MB)
    # Two workers that used their arenas: a worker forked later must not inherit theirs.
    assert len(set(rpm(lambda d: (time.sleep(0.3), os.getpid())[1], [data, data]))) == 2
    stop = threading.Event()
    kills = []

    def killer():
        # SIGKILL whichever worker runs, at moments that land in every phase of a transfer:
        # the pool writing the input, the worker copying it out, writing its result, the pool
        # copying that out.
        delay = 0.005
        while not stop.is_set():
            time.sleep(delay)
            delay = 0.005 + (delay * 7.3) % 0.08
            with shared._lock:
                busy = [w.pid for w in shared._live.values() if w.batch is not None]
            for pid in busy:
                try:
                    os.kill(pid, signal.SIGKILL)
                    kills.append(pid)
                except ProcessLookupError:
                    pass

    thread = threading.Thread(target=killer, daemon=True)
    thread.start()
    outcomes = []
    try:
        for _ in range(8):
            try:
                outcomes.append(rpm(echo, [data])[0] == data)
            except burla.WorkerDied:
                outcomes.append("died")
    finally:
        stop.set()
        thread.join()
    assert kills, "the test never killed a worker"
    assert all(outcome in (True, "died") for outcome in outcomes), f"a result came back wrong: {outcomes}"
    assert rpm(echo, [data]) == [data]  # the pool still works
    # A worker forked while another lives must hold only its own arenas, not its sibling's.
    two = lambda d: (time.sleep(0.3), os.getpid())[1]  # noqa: E731
    victim = min(rpm(two, [data, data]))
    os.kill(victim, signal.SIGKILL)
    deadline = time.monotonic() + 5
    while victim in shared.worker_pids() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert len(set(rpm(two, [data, data]))) == 2
    with shared._lock:
        workers = list(shared._live.values()) + [w for idle in shared._idle.values() for w in idle]
    live_names = {a.name for w in workers if w.arenas for a in (w.arenas.inbox, w.arenas.outbox)}
    live_pids = {w.pid for w in workers} | {os.getpid()}
    deadline = time.monotonic() + 5
    while True:
        held = _arena_holders(f"{channel.NAME_PREFIX}-{os.getpid()}-")
        stale = {pid: names - live_names for pid, names in held.items() if names - live_names}
        strangers = {pid: names for pid, names in held.items() if pid not in live_pids}
        if not stale and not strangers:
            break
        if time.monotonic() > deadline:
            pytest.fail(f"arenas of killed workers are still held: {stale}; held by processes not in the pool: {strangers}")
        time.sleep(0.1)
    for pid, names in held.items():
        if pid != os.getpid():
            mine = {a.name for w in workers if w.pid == pid and w.arenas for a in (w.arenas.inbox, w.arenas.outbox)}
            assert names <= mine, f"worker {pid} holds another worker's arenas: {names - mine}"
    assert _shm_entries() == shm_before, "something was left in /dev/shm"


CALLER = r"""
import json, os, sys, time
from burla import remote_parallel_map

def echo(x):
    return x

if __name__ == "__main__":
    data = os.urandom(30 * 1000 * 1000)
    assert remote_parallel_map(echo, [data, data], spinner=False) == [data, data]
    pids = sorted(set(remote_parallel_map(lambda _: os.getpid(), range(50), spinner=False)))
    print(json.dumps(pids), flush=True)
    if sys.argv[1] == "hold":
        remote_parallel_map(lambda d: (time.sleep(60), d)[1], [data], spinner=False)  # killed in here
"""


@linux_only
@pytest.mark.parametrize("how", ["exit", "SIGKILL"])
def test_no_arena_outlives_its_caller(tmp_path, how):
    script = tmp_path / "caller.py"
    script.write_text(CALLER)
    shm_before = _shm_entries()
    child = subprocess.Popen(
        [sys.executable, str(script), "hold" if how == "SIGKILL" else "exit"],
        stdout=subprocess.PIPE, text=True, env=python_env(), cwd=str(tmp_path),
    )
    try:
        worker_pids = json.loads(child.stdout.readline())
        prefix = f"{channel.NAME_PREFIX}-{child.pid}-"
        assert _arena_holders(prefix) or how == "exit", "the caller's workers hold no arena: nothing was tested"
        if how == "SIGKILL":
            time.sleep(0.5)  # the input is in the worker's arena now
            child.send_signal(signal.SIGKILL)
        child.wait(timeout=60)
        deadline = time.monotonic() + 10
        while _arena_holders(prefix) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not _arena_holders(prefix), f"arenas outlived their caller ({how}): {_arena_holders(prefix)}"
        # A worker lets go of its arenas as it exits (its memory and descriptors go first), and is
        # gone a moment later: CI once looked in between.
        while [pid for pid in worker_pids if _running(pid)] and time.monotonic() < deadline:
            time.sleep(0.05)
        alive = [pid for pid in worker_pids if _running(pid)]
        assert not alive, f"workers outlived their caller: {alive}"
        assert _shm_entries() == shm_before, "something was left in /dev/shm"
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        child.stdout.close()


# --- container workers: everything inline over stdio ----------------------------------------------


def test_stdio_workers_round_trip_big_payloads(monkeypatch, tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "docker").symlink_to(TESTS_DIR / "fake_docker.py")
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_DOCKER_PYTHON", sys.executable)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(sys.path))
    values = big_values()
    values.pop("PickleBuffer type")  # a class of this test module: the container would need it
    from burla_backend_local.containers import _pools

    image = "example/big-payloads:1"  # a pool of its own: other tests' container pools stay cold
    try:
        results = rpm(echo, [(value,) for value in values.values()], image=image, func_ram=1)
        for (name, value), result in zip(values.items(), results):
            assert same(result, value), f"{name}: got {type(result).__name__} over stdio"
        container_workers = [w for key, p in _pools.items() if key[1] == image for w in p._live.values()]
        assert container_workers and all(w.arenas is None for w in container_workers), "a container worker got shared memory"
    finally:
        for key in [key for key in _pools if key[1] == image]:
            _pools.pop(key).shutdown()
