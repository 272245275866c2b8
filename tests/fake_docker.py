#!/usr/bin/env python3
"""A stand-in for the docker client, for tests on machines without a container engine.

`info` answers like a running engine. `run ... --name NAME IMAGE CMD...` runs CMD here, in this
Python environment, as a "container": a process of its own session, which outlives this client
when the client is killed (as a real container outlives `docker run`), is found by NAME in
$FAKE_DOCKER_STATE, gets the signals the client gets (docker's --sig-proxy), and is gone when it
exits (--rm). `rm -f NAME` and `kill NAME` SIGKILL it. Every command line is recorded in
$FAKE_DOCKER_LOG. The image is ignored: what is tested is how the local backend drives an
engine, not the engine.
"""
import os
import signal
import subprocess
import sys
import time

args = sys.argv[1:]
log = os.environ.get("FAKE_DOCKER_LOG")
state = os.environ.get("FAKE_DOCKER_STATE") or (os.path.join(os.path.dirname(log), "containers") if log else None)
if log:
    with open(log, "a") as f:
        f.write(" ".join(args) + "\n")


def container_file(name: str) -> str:
    os.makedirs(state, exist_ok=True)
    return os.path.join(state, name)


def running(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except (OSError, IndexError):
        return False


if args[:1] == ["info"]:
    sys.exit(0)

if args[:1] == ["run"]:
    rest = args[1:]
    with_value = {"--network", "-v", "-w", "-e", "--gpus", "--memory", "--name"}
    name = None
    while rest and rest[0].startswith("-"):
        flag = rest.pop(0)
        if flag in with_value:
            value = rest.pop(0)
            if flag == "--name":
                name = value
    image, command = rest[0], rest[1:]
    if command[:1] == ["python"]:
        command[0] = os.environ.get("FAKE_DOCKER_PYTHON", sys.executable)
    environment = dict(os.environ, FAKE_DOCKER_CONTAINER=name or "")  # so a test can tell which it is
    container = subprocess.Popen(command, start_new_session=True, env=environment)  # stdin/stdout/stderr: ours
    if name and state:
        with open(container_file(name), "w") as f:
            f.write(str(container.pid))
    for number in (signal.SIGUSR1, signal.SIGTERM, signal.SIGINT):
        signal.signal(number, lambda signum, frame: container.send_signal(signum))
    code = container.wait()
    if name and state:
        try:
            os.unlink(container_file(name))
        except FileNotFoundError:
            pass
    sys.exit(128 - code if code < 0 else code)  # a container killed by signal N exits 128 + N

if args[:1] in (["rm"], ["kill"]):
    names = [arg for arg in args[1:] if not arg.startswith("-")]
    missing = False
    for name in names:
        path = container_file(name) if state else None
        try:
            with open(path) as f:
                pid = int(f.read())
        except (OSError, TypeError, ValueError):
            missing = True
            continue
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        deadline = time.monotonic() + 5
        while running(pid) and time.monotonic() < deadline:
            time.sleep(0.01)
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
    if missing:
        sys.exit("Error response from daemon: No such container")
    sys.exit(0)

sys.exit(f"fake docker: unsupported command {args!r}")
