"""Where the function's output comes from: its child processes, C-level writes to fds 1 and 2,
the last lines before its worker dies, progress bars; and the stream objects it writes to."""

from __future__ import annotations

import json
import os
import signal
import sys

import burla

from conformance_tests._support import ScriptRun, call_with_deadline, raised_by, send_suite_by_value

send_suite_by_value(__name__)

DEADLINE = 90


def print_then_exit(i):
    print(f"last stdout line of input {i}", flush=True)
    print(f"last stderr line of input {i}", file=sys.stderr, flush=True)
    if i == 1:
        os._exit(3)
    return i


def print_then_segfault(i):
    print(f"stdout before the crash of input {i}", flush=True)
    sys.stderr.write(f"stderr before the crash of input {i}\n")
    if i == 1:
        os.kill(os.getpid(), signal.SIGSEGV)
    return i


def output_of_children(i):
    """Writes one line per way a function's output can bypass Python's sys.stdout object."""
    import multiprocessing
    import subprocess

    context = multiprocessing.get_context("fork") if hasattr(os, "fork") else multiprocessing.get_context()
    child = context.Process(target=print, args=(f"multiprocessing.Process line of input {i}",))
    child.start()
    child.join()
    with context.Pool(2) as pool:
        pool.map(print, [f"multiprocessing.Pool line {n} of input {i}" for n in range(2)])
    subprocess.run([sys.executable, "-c", f"print('subprocess line of input {i}')"], check=True)
    subprocess.run(
        [sys.executable, "-c", f"import sys; sys.stderr.write('subprocess stderr line of input {i}\\n')"], check=True
    )
    os.write(1, f"fd 1 line of input {i}\n".encode())
    os.write(2, f"fd 2 line of input {i}\n".encode())
    return i


def _child_lines(i):
    return [
        f"multiprocessing.Process line of input {i}",
        f"multiprocessing.Pool line 0 of input {i}",
        f"multiprocessing.Pool line 1 of input {i}",
        f"subprocess line of input {i}",
        f"fd 1 line of input {i}",
    ]


def stream_api(i):
    """What code that works locally does with sys.stdout / sys.stderr."""
    import faulthandler
    import subprocess

    facts = {
        "stdout_fileno": sys.stdout.fileno(),
        "stderr_fileno": sys.stderr.fileno(),
        "stderr_errors": sys.stderr.errors,
        "stdout_encoding": sys.stdout.encoding,
    }
    sys.stdout.buffer.write(f"bytes through sys.stdout.buffer of input {i}\n".encode())
    sys.stdout.flush()
    faulthandler.enable()
    faulthandler.disable()
    subprocess.run([sys.executable, "-c", f"print('subprocess with stdout=sys.stdout of input {i}')"], stdout=sys.stdout, check=True)
    sys.stdout.reconfigure(line_buffering=True)
    print(f"after reconfigure of input {i}")
    sys.stderr.write(f"a lone surrogate \ud800 on stderr of input {i}\n")
    return facts


def test_lines_printed_just_before_the_worker_exits_reach_the_caller(rpm, capfd):
    capfd.readouterr()
    error = call_with_deadline(DEADLINE, "a call whose worker always exits", raised_by, rpm, print_then_exit, [0, 1, 2])
    captured = capfd.readouterr()
    assert isinstance(error, burla.WorkerDied), f"input 1 calls os._exit: expected WorkerDied, got {type(error).__name__}: {error}"
    assert "last stdout line of input 1" in captured.out, (
        "the function printed a line with flush=True and then called os._exit; plain Python shows that line, "
        f"so the caller's stdout must too:\n{captured.out!r}"
    )
    assert "last stderr line of input 1" in captured.err, f"its last stderr line is missing:\n{captured.err!r}"
    assert "last stderr line" not in captured.out, "stderr output was written to stdout"


def test_lines_written_just_before_a_segfault_reach_the_caller(rpm, capfd):
    capfd.readouterr()
    error = call_with_deadline(DEADLINE, "a call whose worker segfaults", raised_by, rpm, print_then_segfault, [0, 1])
    captured = capfd.readouterr()
    assert isinstance(error, burla.WorkerDied), f"input 1 segfaults: expected WorkerDied, got {type(error).__name__}: {error}"
    assert "stdout before the crash of input 1" in captured.out, f"the line printed before the crash is missing:\n{captured.out!r}"
    assert "stderr before the crash of input 1" in captured.err, f"the stderr line before the crash is missing:\n{captured.err!r}"


def test_output_of_child_processes_and_fd_writes_reaches_the_caller(rpm, capfd):
    count = 3
    capfd.readouterr()
    got = call_with_deadline(DEADLINE, "a call whose function starts child processes", rpm, output_of_children, list(range(count)))
    captured = capfd.readouterr()
    assert got == list(range(count)), f"results: {got!r}"
    out_lines, err_lines = captured.out.splitlines(), captured.err.splitlines()
    for i in range(count):
        for line in _child_lines(i):
            assert out_lines.count(line) == 1, (
                f"{line!r} (written by a child process or straight to fd 1) should reach the caller's stdout once, "
                f"as a whole line; stdout was:\n{captured.out}"
            )
        for line in (f"subprocess stderr line of input {i}", f"fd 2 line of input {i}"):
            assert err_lines.count(line) == 1, f"{line!r} should reach the caller's stderr once; stderr was:\n{captured.err}"
    assert "stderr line" not in captured.out and "fd 2 line" not in captured.out, "stderr output was written to stdout"


def test_the_functions_streams_have_the_standard_stream_api(rpm, capfd):
    capfd.readouterr()
    got = call_with_deadline(DEADLINE, "a call using sys.stdout's stream API", rpm, stream_api, [0, 1])
    captured = capfd.readouterr()
    for facts in got:
        assert facts["stdout_fileno"] == 1 and facts["stderr_fileno"] == 2, (
            f"sys.stdout.fileno() / sys.stderr.fileno() should be 1 and 2, as in a plain Python process: {facts}"
        )
        assert facts["stderr_errors"] == "backslashreplace", f"sys.stderr.errors should be 'backslashreplace', as Python's: {facts}"
        assert facts["stdout_encoding"].lower().replace("-", "") == "utf8", f"sys.stdout.encoding: {facts}"
    for i in range(2):
        for line in (
            f"bytes through sys.stdout.buffer of input {i}",
            f"subprocess with stdout=sys.stdout of input {i}",
            f"after reconfigure of input {i}",
        ):
            assert line in captured.out.splitlines(), f"{line!r} is missing from stdout:\n{captured.out}"
        assert f"a lone surrogate \\ud800 on stderr of input {i}" in captured.err, (
            f"stderr escapes what it cannot encode (backslashreplace):\n{captured.err!r}"
        )


PROGRESS_SCRIPT = r'''
import json, os, sys, time
import burla

backend, options, work = json.loads(sys.argv[1])


def show_progress(i):
    for step in range(3):
        sys.stderr.write(f"\rstep {step}/3 of input {i}")
        sys.stderr.flush()
        sys.stdout.write(f"\rstdout step {step}/3 of input {i}")
        sys.stdout.flush()
        release = os.path.join(work, f"release-{step}")
        deadline = time.monotonic() + 30
        while not os.path.exists(release) and time.monotonic() < deadline:
            time.sleep(0.01)
    print()
    return i


if __name__ == "__main__":
    results = burla.remote_parallel_map(show_progress, [0], backend=backend, backend_options=options)
    print(f"JOB FINISHED {results}", flush=True)
'''


def test_progress_bar_updates_are_streamed_while_the_call_runs(burla_backend, burla_backend_options, tmp_path):
    script = tmp_path / "progress.py"
    script.write_text(PROGRESS_SCRIPT, encoding="utf-8")
    work = tmp_path / "work"
    work.mkdir()
    run = ScriptRun(str(script), json.dumps([burla_backend, burla_backend_options, str(work)]))
    try:
        for step in range(3):
            wanted = f"stdout step {step}/3 of input 0"
            seen = run.wait_for_output(lambda out, err: wanted in out and f"step {step}/3 of input 0" in err, timeout=25)
            assert seen, (
                f"the function wrote {wanted!r} after a carriage return (a progress bar), flushed, and waits until this "
                f"test sees it; it never reached the caller while the call ran.\n{run.report()}"
            )
            assert "JOB FINISHED" not in run.stdout, f"the job finished before its progress appeared.\n{run.report()}"
            (work / f"release-{step}").write_text("")
        code = run.wait(timeout=30)
        assert code == 0, f"the script failed or hung (exit status {code}).\n{run.report()}"
        assert "JOB FINISHED [0]" in run.stdout, f"the job did not return [0].\n{run.report()}"
    finally:
        for step in range(3):
            (work / f"release-{step}").write_text("")
        run.kill()
