"""The progress line: drawn only on a terminal, never garbling the function's output."""

from __future__ import annotations

import os
import pty
import re
import subprocess
import sys
import time

from .conftest import python_env

SCRIPT = """
import time
from burla import remote_parallel_map
def work(x):
    time.sleep(0.25)
    print(f"résultat ✓ {{x}} " + "=" * 60)
    return x
remote_parallel_map(work, range(8), func_ram=1, spinner={spinner})
print("finished")
"""


def run_on_terminal(tmp_path, spinner: bool) -> str:
    script = tmp_path / "job.py"
    script.write_text(SCRIPT.format(spinner=spinner))
    env = python_env()
    pid, fd = pty.fork()
    if pid == 0:  # the child: a Python whose stdout and stderr are a terminal
        os.execve(sys.executable, [sys.executable, str(script)], env)
    output = b""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            chunk = os.read(fd, 65536)
        except OSError:
            break
        if not chunk:
            break
        output += chunk
    os.waitpid(pid, 0)
    return output.decode()


def rendered(stream: str) -> list[str]:
    """The lines a terminal shows for `stream`: carriage return, erase-line and newline."""
    lines, line, column = [], [], 0
    for token in re.findall(r"\x1b\[K|\r|\n|[^\r\n\x1b]", stream):
        if token == "\n":
            lines.append("".join(line))
            line, column = [], 0
        elif token == "\r":
            column = 0
        elif token == "\x1b[K":
            del line[column:]
        else:
            line[column : column + 1] = [token]
            column += 1
    lines.append("".join(line))
    return lines


def test_progress_line_shows_on_a_terminal_and_never_garbles_output(tmp_path):
    screen = run_on_terminal(tmp_path, spinner=True)
    assert re.search(r"work: \d+/8 done, \d+ running, 0 failed", screen), f"no progress line in {screen!r}"
    shown = rendered(screen)
    printed = [line for line in shown if "résultat" in line]
    assert sorted(printed) == sorted(f"résultat ✓ {x} " + "=" * 60 for x in range(8)), shown
    assert [line for line in shown if line.strip()][-1] == "finished", f"progress line left behind: {shown}"


def test_spinner_false_shows_no_progress_line_on_a_terminal(tmp_path):
    screen = run_on_terminal(tmp_path, spinner=False)
    assert "done," not in screen and "\x1b[K" not in screen, screen
    assert screen.count("résultat ✓") == 8


def test_no_progress_line_when_output_is_not_a_terminal(tmp_path):
    script = tmp_path / "job.py"
    script.write_text(SCRIPT.format(spinner=True))
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=60, env=python_env())
    assert out.returncode == 0, out.stderr
    assert "\x1b[" not in out.stdout + out.stderr and "running" not in out.stderr, out.stderr
    assert out.stdout.count("résultat ✓") == 8


def test_pieces_are_printed_at_once_and_two_inputs_never_share_a_line(capsys):
    from burla_core.console import Console

    console = Console(False, "work")
    console.write_logs([(0, 1, "\rprogress 10%")])
    assert capsys.readouterr().out == "\rprogress 10%", "an unfinished piece (a progress bar) must be printed at once"
    console.write_logs([(0, 1, "\rprogress 20%"), (1, 1, "input 1 line\n"), (0, 1, "\rprogress 30%"), (0, 1, " done\n")])
    console.write_logs([(2, 1, "a" * 10), (2, 1, "b" * 10 + "\n")])
    console.close()
    out = capsys.readouterr().out
    assert out == "\rprogress 20%\ninput 1 line\n\rprogress 30% done\n" + "a" * 10 + "b" * 10 + "\n", repr(out)


def test_an_unfinished_line_is_ended_when_the_console_closes_or_burla_speaks(capsys):
    from burla_core.console import Console

    console = Console(False, "work")
    console.write_logs([(0, 2, "no newline yet")])
    console.notice("input 0: retrying it")
    console.write_logs([(0, 1, "stdout left open")])
    console.close()
    captured = capsys.readouterr()
    assert captured.err == "no newline yet\nburla: input 0: retrying it\n", repr(captured.err)
    assert captured.out == "stdout left open\n", repr(captured.out)


PROGRESS_BAR_SCRIPT = """
import sys, time
from burla import remote_parallel_map
def work(x):
    for step in range(4):
        sys.stderr.write(f"\\rbar {{step}}/3")
        sys.stderr.flush()
        time.sleep(0.3)
    sys.stderr.write("\\n")
    return x
remote_parallel_map(work, [0], func_ram=1, spinner={spinner})
print("finished")
"""


def test_a_progress_bar_of_the_function_is_not_erased_by_the_progress_line(tmp_path):
    script = tmp_path / "job.py"
    script.write_text(PROGRESS_BAR_SCRIPT.format(spinner=True))
    env = python_env()
    pid, fd = pty.fork()
    if pid == 0:
        os.execve(sys.executable, [sys.executable, str(script)], env)
    output = b""
    first_seen: dict[str, float] = {}
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            chunk = os.read(fd, 65536)
        except OSError:
            break
        if not chunk:
            break
        output += chunk
        for step in range(4):
            if f"bar {step}/3".encode() in output:
                first_seen.setdefault(f"bar {step}/3", time.monotonic())
    os.waitpid(pid, 0)
    screen = output.decode()
    assert first_seen.get("bar 3/3", 0) - first_seen.get("bar 0/3", 0) > 0.3, (
        f"the bar's updates, 0.3 s apart in the function, should appear as they are written: {first_seen}"
    )
    shown = [line for line in rendered(screen) if line.strip()]
    assert "bar 3/3" in shown, f"the function's progress bar should end shown on its own line: {shown}"
    bar_part = screen[screen.index("bar 0/3") : screen.index("bar 3/3")]
    assert "\x1b[K" not in bar_part, f"the progress line erased the function's unfinished line: {bar_part!r}"
