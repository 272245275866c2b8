#!/usr/bin/env python3
"""A stand-in for the docker client, for tests on machines without a container engine.

`info` answers like a running engine; `run ... IMAGE CMD...` runs CMD here, in this Python
environment, and records the full command line in $FAKE_DOCKER_LOG. Everything else fails.
The image is ignored: what is tested is how the local backend drives an engine, not the engine.
"""
import os
import sys

args = sys.argv[1:]
log = os.environ.get("FAKE_DOCKER_LOG")
if log:
    with open(log, "a") as f:
        f.write(" ".join(args) + "\n")
if args[:1] == ["info"]:
    sys.exit(0)
if args[:1] == ["run"]:
    rest = args[1:]
    with_value = {"--network", "-v", "-w", "-e", "--gpus", "--memory"}
    while rest and rest[0].startswith("-"):
        flag = rest.pop(0)
        if flag in with_value:
            rest.pop(0)
    image, command = rest[0], rest[1:]
    if command[:1] == ["python"]:
        command[0] = os.environ.get("FAKE_DOCKER_PYTHON", sys.executable)
    os.execvp(command[0], command)
sys.exit(f"fake docker: unsupported command {args!r}")
