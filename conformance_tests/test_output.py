"""What the function prints: streamed back as it is written, whole lines, each to its own stream."""

from __future__ import annotations

import json
import sys
import time

from conformance_tests._support import ScriptRun, raised_by, send_suite_by_value

send_suite_by_value(__name__)

UNICODE = "ünïcödé ✓ 日本語 🚀"
LINES_PER_INPUT = 4


def chatty(i):
    """Writes each line in pieces, yielding the CPU between them, to both streams."""
    for n in range(LINES_PER_INPUT):
        sys.stdout.write(f"out {i}.{n} ")
        time.sleep(0.001)
        sys.stdout.write(f"{UNICODE} end\n")
        sys.stderr.write(f"err {i}.{n} ")
        time.sleep(0.001)
        print(f"{UNICODE} end", file=sys.stderr)
    return i


def talk_then_fail(i):
    if i == 1:
        print("printed by input 1 before it raised")
        print("stderr of input 1 before it raised", file=sys.stderr)
        sys.stdout.write("partial line of input 1 without newline")
        raise RuntimeError("input 1 fails after printing")
    return i


def _expected(stream, count):
    return {i: [f"{stream} {i}.{n} {UNICODE} end" for n in range(LINES_PER_INPUT)] for i in range(count)}


def _check_stream(name, text, expected, strict):
    """Each input's lines whole, in order, once; nothing mixed in. `strict`: no other lines at
    all (stdout); otherwise other lines (a backend's notices on stderr) are allowed if they do
    not look like pieces of the function's output."""
    lines = text.splitlines()
    for i, wanted in expected.items():
        mine = [line for line in lines if line.startswith(f"{name} {i}.")]
        assert mine == wanted, (
            f"{name}: input {i}'s lines should appear whole, in order, once each:\n  expected {wanted!r}\n  got {mine!r}"
        )
    allowed = {line for wanted in expected.values() for line in wanted}
    strays = [
        line
        for line in lines
        if line not in allowed and (strict or UNICODE in line or line.startswith(("out ", "err ")) or " end" in line)
    ]
    assert not strays, f"{name}: unexpected lines (broken mid-line, or from the other stream): {strays[:6]!r}"


def test_stdout_and_stderr_lines_arrive_whole_each_on_its_own_stream(rpm, capfd):
    count = 16
    capfd.readouterr()
    got = rpm(chatty, list(range(count)))
    captured = capfd.readouterr()
    assert got == list(range(count)), f"results: {got!r}"
    _check_stream("out", captured.out, _expected("out", count), strict=True)
    _check_stream("err", captured.err, _expected("err", count), strict=False)


def test_output_printed_before_an_error_is_not_dropped(rpm, capfd):
    capfd.readouterr()
    error = raised_by(rpm, talk_then_fail, [0, 1, 2])
    captured = capfd.readouterr()
    assert type(error) is RuntimeError, f"expected input 1's RuntimeError, got {type(error).__name__}: {error}"
    assert "printed by input 1 before it raised" in captured.out, (
        f"a line printed before the error is missing from stdout:\n{captured.out!r}"
    )
    assert "partial line of input 1 without newline" in captured.out, (
        f"output written without a newline before the error is missing from stdout:\n{captured.out!r}"
    )
    assert "stderr of input 1 before it raised" in captured.err, (
        f"a stderr line printed before the error is missing from stderr:\n{captured.err!r}"
    )
    assert "stderr of input 1" not in captured.out, "stderr output was written to stdout"


STREAMING_SCRIPT = r'''
import json, os, sys, time
import burla

backend, options, work = json.loads(sys.argv[1])


def talk_then_wait(i):
    print(f"streamed line from input {i}", flush=True)
    release = os.path.join(work, "release")
    deadline = time.monotonic() + 30
    while not os.path.exists(release) and time.monotonic() < deadline:
        time.sleep(0.01)
    return i


if __name__ == "__main__":  # spawn-based backends re-import this module in their workers
    print("JOB STARTING", flush=True)
    results = burla.remote_parallel_map(talk_then_wait, [0], backend=backend, backend_options=options)
    print(f"JOB FINISHED {results}", flush=True)
'''


def test_print_output_is_streamed_while_the_job_runs(burla_backend, burla_backend_options, tmp_path):
    script = tmp_path / "streaming.py"
    script.write_text(STREAMING_SCRIPT, encoding="utf-8")
    work = tmp_path / "work"
    work.mkdir()
    run = ScriptRun(str(script), json.dumps([burla_backend, burla_backend_options, str(work)]))
    try:
        line = run.wait_for_line(lambda text: "streamed line" in text or "JOB FINISHED" in text, timeout=25)
        assert line is not None, (
            "the function printed a line and then waits until this test sees it; the line never reached the "
            f"caller's stdout while the job ran (it is not streamed).\n{run.report()}"
        )
        assert "JOB FINISHED" not in line, f"the job finished before its output appeared.\n{run.report()}"
        assert line == "streamed line from input 0", f"the streamed line arrived altered: {line!r}"
        (work / "release").write_text("")
        code = run.wait(timeout=30)
        assert code is not None, f"the job did not finish after the function was released.\n{run.report()}"
        assert code == 0, f"the script failed (exit status {code}).\n{run.report()}"
        assert "JOB FINISHED [0]" in run.stdout, f"the job did not return [0].\n{run.report()}"
    finally:
        (work / "release").write_text("")
        run.kill()


def print_long_line(size):
    print("L" * size)
    sys.stdout.write("a" * size)
    sys.stdout.write("b" * 10 + "\n")
    print("after the long lines")
    return size


def print_many_lines(i, count):
    for n in range(count):
        print(f"bulk {i} {n}")
    return i


def test_long_lines_arrive_intact(rpm, capfd):
    size = 200_000
    capfd.readouterr()
    got = rpm(print_long_line, [size])
    out = capfd.readouterr().out
    assert got == [size], f"results: {got!r}"
    expected = ["L" * size, "a" * size + "b" * 10, "after the long lines"]
    lines = out.split("\n")
    assert lines[-1] == "", f"stdout should end with a newline; it ends with {lines[-1][-40:]!r}"
    lines = lines[:-1]
    shape = [(line[:1], len(line)) for line in lines]
    assert lines == expected, (
        f"a {size:,}-character line printed with print(), and one written in two pieces, should each arrive as "
        f"one line, followed by 'after the long lines'; got lines (first char, length): {shape}"
    )


def test_lots_of_output_is_not_dropped(rpm, capfd):
    inputs, count = 4, 3000
    capfd.readouterr()
    got = rpm(print_many_lines, [(i, count) for i in range(inputs)])
    out = capfd.readouterr().out
    assert got == list(range(inputs)), f"results: {got!r}"
    lines = out.splitlines()
    for i in range(inputs):
        mine = [line for line in lines if line.startswith(f"bulk {i} ")]
        assert mine == [f"bulk {i} {n}" for n in range(count)], (
            f"input {i} printed {count} lines; {len(mine)} arrived"
            + ("" if len(mine) != count else " but not in the order printed")
        )
    assert len(lines) == inputs * count, f"{inputs * count} lines were printed, stdout has {len(lines)}"


UNENCODABLE_SCRIPT = r'''
import json, sys
import burla

backend, options = json.loads(sys.argv[1])


def print_lone_surrogate(i):
    print(f"input {i}: a lone surrogate \ud800 cannot be encoded as UTF-8")
    return i


if __name__ == "__main__":
    try:
        results = burla.remote_parallel_map(print_lone_surrogate, [0, 1], backend=backend, backend_options=options)
        outcome = {"returned": results}
    except BaseException as error:
        outcome = {"raised": type(error).__name__, "is_unicode_error": isinstance(error, UnicodeError)}
    print("OUTCOME", json.dumps(outcome), flush=True)
'''


def test_unencodable_output_never_hangs(burla_backend, burla_backend_options, tmp_path):
    script = tmp_path / "unencodable.py"
    script.write_text(UNENCODABLE_SCRIPT, encoding="utf-8")
    run = ScriptRun(str(script), json.dumps([burla_backend, burla_backend_options]))
    try:
        code = run.wait(timeout=20)
        assert code is not None, (
            "printing a string that cannot be encoded (a lone surrogate) made the call hang for 20 s; it should "
            "either raise UnicodeEncodeError in the function, as print() does locally, or replace the character. "
            f"Last output:\n{run.report()}"
        )
        outcomes = [json.loads(line.split(" ", 1)[1]) for line in run.lines if line.startswith("OUTCOME ")]
        assert outcomes, f"the script did not finish normally (exit status {code}).\n{run.report()}"
        outcome = outcomes[0]
        assert outcome.get("returned") == [0, 1] or outcome.get("is_unicode_error"), (
            f"expected results [0, 1] or a UnicodeError, got {outcome}.\n{run.report()}"
        )
    finally:
        run.kill()
