"""Behaviour specific to the local backend: slots from this machine, GPUs, memory, images."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

import burla
from burla import remote_parallel_map
from burla_backend_local import provisioner as local
from burla_core.types import ResourceRequest

from .conftest import python_env


def rpm(*args, **kwargs):
    kwargs.setdefault("spinner", False)
    return remote_parallel_map(*args, **kwargs)


def test_slots_are_the_smaller_of_cores_per_func_cpu_and_ram_per_func_ram():
    cpus, ram = local.cpu_count(), local.usable_ram_gb()
    for func_cpu, func_ram in [(1, 1), (1, 4), (2, 1), (1, int(ram // 2) or 1)]:
        node = local.LocalProvisioner().eligible_nodes(ResourceRequest(func_cpu, func_ram))[0]
        assert node.slots == min(cpus // func_cpu, int(ram // func_ram)), (func_cpu, func_ram, node)


def test_request_no_node_can_satisfy_fails_at_once_saying_what_the_machine_has():
    started = time.monotonic()
    with pytest.raises(burla.NoCompatibleNodes) as caught:
        rpm(abs, [1], func_cpu=local.cpu_count() + 1)
    message = str(caught.value)
    assert f"{local.cpu_count()} CPUs" in message and "GB of usable RAM" in message, message
    with pytest.raises(burla.NoCompatibleNodes, match="func_ram=100000"):
        rpm(abs, [1], func_ram=100_000)
    assert time.monotonic() - started < 2


def test_calls_run_concurrently_on_all_slots(tmp_path):
    def record(x):
        import time as t

        start = t.time()
        t.sleep(0.3)
        return start, t.time()

    spans = rpm(record, range(local.cpu_count()), func_ram=1)
    latest_start = max(s for s, _ in spans)
    earliest_end = min(e for _, e in spans)
    assert latest_start < earliest_end, f"calls did not overlap: {spans}"


def test_unknown_gpu_name_fails_listing_the_valid_ones():
    with pytest.raises(burla.UnknownGPU) as caught:
        rpm(abs, [1], func_gpu="T4")
    for name in ("A100", "A100_40G", "A100_80G", "H100", "H100_80G"):
        assert name in str(caught.value)


def test_no_gpu_of_the_family_fails_at_once(fake_gpus):
    fake_gpus("H100:81559")
    with pytest.raises(burla.NoCompatibleNodes) as caught:
        rpm(abs, [1], func_gpu="A100_80G")
    assert "H100" in str(caught.value), caught.value
    fake_gpus("")
    with pytest.raises(burla.NoCompatibleNodes, match="no NVIDIA GPU"):
        rpm(abs, [1], func_gpu="H100")


def test_each_gpu_call_sees_exactly_one_gpu_of_the_family(fake_gpus, tmp_path):
    fake_gpus("H100:81559,A100:40960,H100:81559")

    def visible(x):
        import os as o
        import time as t

        t.sleep(0.2)
        return o.environ.get("CUDA_VISIBLE_DEVICES")

    seen = rpm(visible, range(6), func_gpu="H100", func_ram=1)
    assert set(seen) == {"0", "2"}, f"H100 calls must each see one H100 (indices 0 and 2): {seen}"
    # an 80 GB A100 also satisfies a plain "A100" request; a 40 GB one does not satisfy A100_80G
    assert set(rpm(visible, range(2), func_gpu="A100", func_ram=1)) == {"1"}


@pytest.mark.skipif(
    shutil.which("nvidia-smi") is None or subprocess.run(["nvidia-smi", "-L"], capture_output=True).returncode != 0,
    reason="no NVIDIA GPU on this machine",
)
def test_real_gpu_calls_each_see_exactly_one_gpu():
    gpus = local.detect_gpus()
    family = next((g.family for g in gpus if g.family), None)
    if family is None:
        pytest.skip(f"no GPU of a func_gpu family here: {gpus}")

    def inspect(x):
        import subprocess as sp

        listed = sp.run(["nvidia-smi", "-L"], capture_output=True, text=True).stdout.strip().splitlines()
        try:
            import torch

            torch_count = torch.cuda.device_count()
        except ImportError:
            torch_count = None
        print(f"input {x}: nvidia-smi -L -> {listed}; torch.cuda.device_count() -> {torch_count}")
        return len(listed), torch_count

    results = rpm(inspect, range(4), func_gpu=family, func_ram=1)
    for listed, torch_count in results:
        assert listed == 1, results
        assert torch_count in (1, None), results


def test_function_over_func_ram_is_killed_retried_once_then_raises(tmp_path):
    def hog(x):
        import time as t

        block = bytearray(1536 * 2**20)  # 1.5 GiB, touched so it is resident
        for i in range(0, len(block), 4096):
            block[i] = 1
        t.sleep(5)
        return len(block)

    started = time.monotonic()
    with pytest.raises(burla.WorkerDied) as caught:
        rpm(hog, [0], func_ram=1)
    assert caught.value.burla_input_index == 0
    assert "ran out of memory" in str(caught.value) and "func_ram of 1 GiB" in str(caught.value), caught.value
    assert time.monotonic() - started < 20


def test_grow_on_local_says_it_cannot_grow_and_runs(capfd):
    assert rpm(abs, [-1, -2], grow=True) == [1, 2]
    assert "cannot add nodes" in capfd.readouterr().err


def test_workers_do_not_outlive_the_calling_process(tmp_path):
    script = tmp_path / "caller.py"
    script.write_text(
        "import os\n"
        "from burla import remote_parallel_map\n"
        "pids = set(remote_parallel_map(lambda x: os.getpid(), range(8), func_ram=1, spinner=False))\n"
        "print(' '.join(map(str, pids)))\n"
    )
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=60, env=python_env())
    assert out.returncode == 0, out.stderr
    pids = [int(p) for p in out.stdout.split()]
    assert pids
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and any(Path(f"/proc/{p}").exists() for p in pids):
        time.sleep(0.05)
    alive = [p for p in pids if Path(f"/proc/{p}").exists()]
    assert not alive, f"worker processes {alive} outlived their caller"


def test_workers_exit_when_the_caller_is_killed(tmp_path):
    script = tmp_path / "caller.py"
    script.write_text(
        "import os, sys, time\n"
        "from burla import remote_parallel_map\n"
        "def slow(x):\n"
        "    print(os.getpid(), flush=True)\n"
        "    time.sleep(60)\n"
        "remote_parallel_map(slow, range(2), func_ram=1, spinner=False)\n"
    )
    caller = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True, env=python_env())
    pids = [int(caller.stdout.readline()) for _ in range(2)]
    caller.kill()
    caller.wait(10)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and any(Path(f"/proc/{p}").exists() for p in pids):
        time.sleep(0.05)
    assert not [p for p in pids if Path(f"/proc/{p}").exists()], "workers outlived a SIGKILLed caller"


def test_spawn_start_method_works(tmp_path):
    """macOS and Windows start workers with spawn: the same calls work there."""
    script = tmp_path / "spawned.py"
    script.write_text(
        "from burla import remote_parallel_map\n"
        "def double(x):\n"
        "    print('doubling', x)\n"
        "    return 2 * x\n"
        "if __name__ == '__main__':\n"
        "    print(remote_parallel_map(double, range(4), func_ram=1, spinner=False))\n"
        "    print(remote_parallel_map(lambda x: x + 1, range(3), func_ram=1, spinner=False))\n"
    )
    out = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=120, env=python_env(BURLA_START_METHOD="spawn")
    )
    assert out.returncode == 0, out.stderr
    assert "[0, 2, 4, 6]" in out.stdout and "[1, 2, 3]" in out.stdout and "doubling 3" in out.stdout, out.stdout


def test_warm_workers_follow_the_callers_working_directory(tmp_path, monkeypatch):
    rpm(abs, [1])  # workers are warm, started in the old directory
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data.txt").write_text("here")
    assert rpm(lambda name: open(name).read(), ["data.txt"]) == ["here"]


SHARED_MEMORY_CALLER = """
from burla import remote_parallel_map
import time

held = bytearray(1536 * 2**20)  # 1.5 GiB held by the caller, touched so that it is resident
for i in range(0, len(held), 4096):
    held[i] = 1

def light(x):
    time.sleep(0.8)  # several watchdog rounds
    return x

if __name__ == "__main__":
    print(remote_parallel_map(light, range(2), func_ram=1, spinner=False))
"""


def test_memory_the_worker_shares_with_the_caller_does_not_count_against_func_ram(tmp_path):
    script = tmp_path / "caller.py"
    script.write_text(SHARED_MEMORY_CALLER)
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120, env=python_env())
    assert out.returncode == 0 and "[0, 1]" in out.stdout, (
        "the caller holds 1.5 GiB and the calls use almost nothing: func_ram=1 must count only what a call adds, "
        f"not what its forked worker shares with the caller.\nstdout: {out.stdout}\nstderr: {out.stderr[-3000:]}"
    )
    assert "ran out of memory" not in out.stderr, out.stderr


def test_a_line_printed_before_the_func_ram_kill_reaches_the_caller(capfd):
    def hog(x):
        print("allocating now", flush=True)
        block = bytearray(1536 * 2**20)
        for i in range(0, len(block), 4096):
            block[i] = 1
        time.sleep(5)
        return len(block)

    capfd.readouterr()
    with pytest.raises(burla.WorkerDied, match="ran out of memory"):
        rpm(hog, [0], func_ram=1)
    assert capfd.readouterr().out.count("allocating now") == 2, "the line printed before each of the two kills is missing"


def test_worker_died_says_how_without_blaming_sys_exit():
    with pytest.raises(burla.WorkerDied) as caught:
        rpm(lambda x: os._exit(5), [0])
    message = str(caught.value)
    assert "status 5" in message and "os._exit" in message, message
    assert "sys.exit" not in message, f"sys.exit raises SystemExit, which comes back as the error; it cannot kill a worker: {message}"


def test_sys_exit_in_the_function_comes_back_as_system_exit():
    with pytest.raises(SystemExit) as caught:
        rpm(lambda x: sys.exit(4), [0])
    assert caught.value.code == 4


class Unreconstructed(Exception):
    def __init__(self, message, detail):
        super().__init__(message)
        self.detail = detail


def _without_init(cls, args, state):
    error = cls.__new__(cls)  # what tblib's reducer does: no __init__, so SystemExit has no code
    error.args = args
    return error


def _reduce_without_init(error):
    return _without_init, (type(error), error.args, {})


def test_an_exception_comes_back_as_its_type_pickles_it_whatever_reducer_a_library_registered():
    # Importing distributed registers tblib's reducer for every exception type with copyreg.
    import copyreg

    for cls in (SystemExit, Unreconstructed):
        copyreg.pickle(cls, _reduce_without_init)
    try:
        with pytest.raises(SystemExit) as caught:
            rpm(lambda x: sys.exit(4), [0])
        assert caught.value.code == 4
        with pytest.raises(Unreconstructed) as caught:
            rpm(lambda x: (_ for _ in ()).throw(Unreconstructed("bad", detail=7)), [0])
        assert caught.value.detail == 7 and caught.value.args == ("bad",)
    finally:
        for cls in (SystemExit, Unreconstructed):
            copyreg.dispatch_table.pop(cls, None)


FORKSERVER_CALLER = """
import time
from burla import remote_parallel_map

def slow(x):
    time.sleep(1.0)  # four times the worker's parent-watch interval
    return x * 2

if __name__ == "__main__":
    print(remote_parallel_map(slow, range(2), func_ram=1, spinner=False))
"""


def test_forkserver_start_method_runs_calls_longer_than_the_parent_watch(tmp_path):
    script = tmp_path / "forkserver.py"
    script.write_text(FORKSERVER_CALLER)
    out = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=120, env=python_env(BURLA_START_METHOD="forkserver")
    )
    assert out.returncode == 0 and "[0, 2]" in out.stdout, f"stdout: {out.stdout}\nstderr: {out.stderr[-3000:]}"
    assert "retrying" not in out.stderr, f"a worker died under forkserver: {out.stderr}"


def test_invalid_start_method_is_an_invalid_argument_naming_the_variable(tmp_path):
    script = tmp_path / "bad_method.py"
    script.write_text(
        "import burla\n"
        "try:\n"
        "    burla.remote_parallel_map(abs, [1], spinner=False)\n"
        "except burla.InvalidArgument as error:\n"
        "    print('InvalidArgument:', error)\n"
    )
    out = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=60, env=python_env(BURLA_START_METHOD="frok")
    )
    assert out.returncode == 0, out.stderr
    message = out.stdout
    assert "InvalidArgument:" in message and "BURLA_START_METHOD" in message and "'frok'" in message, message
    assert all(method in message for method in ("fork", "spawn", "forkserver")), f"the message should list the valid values: {message}"


def test_warm_workers_see_the_callers_sys_path_and_environment_as_of_each_call(tmp_path, monkeypatch):
    monkeypatch.setenv("BURLA_TEST_REMOVED_LATER", "1")
    rpm(abs, [1, 2])  # workers are warm, started with the old sys.path and environment
    src = tmp_path / "src"
    src.mkdir()
    (src / "burla_test_local_lib.py").write_text("VALUE = 'from src'\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend("src")  # relative, as `sys.path.insert(0, "src")` in a script
    monkeypatch.setenv("BURLA_TEST_ADDED_LATER", "added")
    monkeypatch.delenv("BURLA_TEST_REMOVED_LATER")

    def look(x):
        import os as o

        import burla_test_local_lib

        return burla_test_local_lib.VALUE, o.environ.get("BURLA_TEST_ADDED_LATER"), "BURLA_TEST_REMOVED_LATER" in o.environ

    assert rpm(look, [0, 1]) == [("from src", "added", False)] * 2


def test_gpu_workers_keep_their_own_cuda_visible_devices_when_the_environment_is_synced(fake_gpus, monkeypatch):
    fake_gpus("H100:81559,H100:81559")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1")  # the caller's own setting

    def visible(x):
        import os as o
        import time as t

        t.sleep(0.2)
        return o.environ.get("CUDA_VISIBLE_DEVICES")

    assert set(rpm(visible, range(4), func_gpu="H100", func_ram=1)) == {"0", "1"}
    assert rpm(visible, [0], func_ram=1) == ["0,1"], "a CPU worker sees the caller's CUDA_VISIBLE_DEVICES"


def visible_gpu_after_a_nap(x):
    import os
    import time

    time.sleep(0.8)
    return os.environ.get("CUDA_VISIBLE_DEVICES")


def test_two_gpu_jobs_at_once_never_share_a_gpu(fake_gpus):
    import threading

    fake_gpus("H100:81559,H100:81559")
    seen = {}

    def call(name):
        seen[name] = rpm(visible_gpu_after_a_nap, [name], func_gpu="H100", func_ram=1)[0]

    threads = [threading.Thread(target=call, args=(name,)) for name in ("first", "second")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert set(seen) == {"first", "second"}, seen
    assert seen["first"] != seen["second"], f"two jobs running at once were given the same GPU: {seen}"


def _timer_slacks(_):
    import ctypes
    import threading

    def read() -> int:  # this thread's own slack: prctl(PR_GET_TIMERSLACK)
        return ctypes.CDLL(None).prctl(30, 0, 0, 0, 0)

    seen = []
    thread = threading.Thread(target=lambda: seen.append(read()))
    thread.start()
    thread.join()
    return read(), seen[0]


@pytest.mark.skipif(not os.path.exists("/proc/self/timerslack_ns"), reason="the kernel has no per-process timer slack")
def test_the_function_and_threads_it_starts_get_a_1_us_timer_slack_and_the_caller_keeps_its_own():
    from burla_core.worker import TIMER_SLACK_NS

    with open("/proc/self/timerslack_ns") as slack:
        callers = int(slack.read())
    assert rpm(_timer_slacks, [0, 1]) == [(TIMER_SLACK_NS, TIMER_SLACK_NS)] * 2
    with open("/proc/self/timerslack_ns") as slack:
        assert int(slack.read()) == callers
