"""Runs one measurement in a fresh child Python and reads back its JSON, for every benchmark here.

A benchmark script calls `serve_child(TASKS)` first thing in `main()`: when it was started as
`SCRIPT --child TASK ARGS_JSON` it runs TASKS[TASK](*args), prints one result line and exits.
The parent calls `in_child(SCRIPT, TASK, *args)`, which starts exactly that and returns the dict
the task returned, or raises with the child's output when it failed. A fresh process per
measurement keeps one system's warm processes, imports or memory from colouring another's.
"""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Callable

RESULT_PREFIX = "BENCH-RESULT "


def child_command(script: str, task: str, *args) -> list[str]:
    return [sys.executable, script, "--child", task, json.dumps(list(args))]


def serve_child(tasks: dict[str, Callable[..., dict]]) -> bool:
    """Run the task named on the command line, if this process is a child; True when it was."""
    argv = sys.argv[1:]
    if len(argv) < 2 or argv[0] != "--child":
        return False
    task, args = argv[1], json.loads(argv[2]) if len(argv) > 2 else []
    result = tasks[task](*args)
    sys.stdout.flush()
    print(RESULT_PREFIX + json.dumps(result), flush=True)
    return True


def in_child(script: str, task: str, *args, env: dict | None = None, timeout: float = 600) -> dict:
    done = subprocess.run(child_command(script, task, *args), capture_output=True, text=True, env=env, timeout=timeout)
    for line in done.stdout.splitlines():
        if line.startswith(RESULT_PREFIX):
            return json.loads(line[len(RESULT_PREFIX):])
    raise RuntimeError(
        f"child {task}{list(args)} failed (exit {done.returncode}):\n{done.stdout[-2000:]}\n{done.stderr[-4000:]}"
    )


def importable(module: str) -> bool:
    try:
        __import__(module)
    except ImportError:
        return False
    return True
