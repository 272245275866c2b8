"""THE MACHINE SEAM: the one place where a simulated VM differs from a real one.

A real VM's startup path needs things this machine has not got: packages to install, a
container engine, GPU drivers. A simulated VM runs the same startup script with a directory of
stub commands first on its PATH, written here and nowhere else:

- `apt-get`, `apt`: record the request (`$VM_DIR/seam.log`) and succeed; nothing is installed.
- `docker`: `info`, `pull`, `login`, `ps`, `rm`, `stop` succeed; `run [OPTIONS] IMAGE CMD…` runs CMD on
  this machine (the image is recorded, not fetched: `python`/`python3` is this Python), with
  `-e`/`--env` applied, `-d` in the background, printing a container id.
- `nvidia-smi` (only on a VM that has GPUs, as on GCE): reports the GPUs of the VM's machine type or
  `guestAccelerators`, by the names and memory sizes the real driver prints.
- `systemd-run [--unit=NAME] [--property=…] CMD…`: starts CMD in the background inside the VM (its
  process group: deleting the VM stops it), output in `$VM_DIR/units/NAME.log`.
- `sudo CMD…`: runs CMD (startup scripts run as root on GCE).
- `python`, `python3`: this Python. `python -m pip install …` is recorded and succeeds without
  installing anything: a real VM pip-installs burla from PyPI, a simulated one already imports it
  from this checkout (the stand-in's own Python).

The environment tells a script what it runs on: `BURLA_STANDIN_VM_NAME`, `_ZONE`,
`_MACHINE_TYPE`, `_IMAGE`, `_GPUS` (`nvidia-tesla-a100:1`), `_CPUS`, `_MEMORY_MB` and `_DIR`.
"""

from __future__ import annotations

import json
import stat
import sys
from pathlib import Path

from .machines import ACCELERATORS

_PYTHON_STUB_HEADER = """#!{python}
# Written by burla_backend_gcp.standin.seam: a stand-in for a real VM's `{name}`.
import os, sys, time
def record(line):
    with open(os.path.join(os.environ.get("BURLA_STANDIN_VM_DIR", "."), "seam.log"), "a") as log:
        log.write(line + "\\n")
record({name!r} + " " + " ".join(sys.argv[1:]))
"""

_DOCKER = r"""
args = sys.argv[1:]
if args[:1] in (["info"], ["pull"], ["login"], ["ps"], ["rm"], ["stop"], ["version"], ["images"]):
    sys.exit(0)
if args[:1] != ["run"]:
    sys.exit(f"docker (stand-in): unsupported command {' '.join(args)!r}")
rest, env, detach = args[1:], dict(os.environ), False
with_value = {"--network", "--net", "-v", "--volume", "-w", "--workdir", "--gpus", "--memory", "--name",
              "-p", "--publish", "--user", "-u", "--shm-size", "--cpus", "--ulimit", "--mount", "--entrypoint"}
while rest and rest[0].startswith("-"):
    flag = rest.pop(0)
    value = None
    if "=" in flag:
        flag, value = flag.split("=", 1)
    elif flag in with_value or flag in ("-e", "--env"):
        value = rest.pop(0)
    if flag in ("-e", "--env"):
        key, _, val = value.partition("=")
        env[key] = val if _ else os.environ.get(key, "")
    elif flag in ("-d", "--detach"):
        detach = True
    elif flag in ("-it", "-ti", "-i", "-t", "--rm", "--privileged", "--init"):
        pass
    elif flag not in with_value:
        sys.exit(f"docker (stand-in): unsupported option {flag!r}")
image, command = rest[0], rest[1:]
record("image " + image)
if not command:
    sys.exit(f"docker (stand-in): {image!r} has no command here; pass one after the image")
if command[0] in ("python", "python3"):
    command[0] = sys.executable
if detach:
    import subprocess, uuid
    out = open(os.path.join(os.environ.get("BURLA_STANDIN_VM_DIR", "."), "docker-detached.log"), "ab")
    subprocess.Popen(command, env=env, stdout=out, stderr=out, stdin=subprocess.DEVNULL)
    print(uuid.uuid4().hex)
    sys.exit(0)
os.execvpe(command[0], command, env)
"""

_NVIDIA_SMI = r"""
gpus = []
for item in filter(None, os.environ.get("BURLA_STANDIN_VM_GPUS", "").split(",")):
    kind, _, count = item.partition(":")
    gpus += [ACCELERATORS[kind]] * int(count or 1)  # noqa: F821 - defined above by write_stubs
if any(a.startswith("--query-gpu=") for a in sys.argv[1:]):
    fields = next(a for a in sys.argv[1:] if a.startswith("--query-gpu=")).split("=", 1)[1].split(",")
    for index, gpu in enumerate(gpus):
        values = {"index": str(index), "name": gpu[0], "memory.total": str(gpu[1]),
                  "memory.used": "0", "utilization.gpu": "0", "uuid": f"GPU-standin-{index}",
                  "count": str(len(gpus))}
        print(", ".join(values.get(f.strip(), "[N/A]") for f in fields))
elif "-L" in sys.argv[1:]:
    for index, gpu in enumerate(gpus):
        print(f"GPU {index}: {gpu[0]} (UUID: GPU-standin-{index})")
else:
    print("NVIDIA-SMI 550.00 (stand-in)    Driver Version: 550.00    CUDA Version: 12.4")
    for index, gpu in enumerate(gpus):
        print(f"|   {index}  {gpu[0]}   0MiB / {gpu[1]}MiB |")
"""

_SYSTEMD_RUN = r"""
import subprocess
args, unit = sys.argv[1:], "run-%d" % os.getpid()
while args and args[0].startswith("-"):
    flag = args.pop(0)
    if flag.startswith("--unit="):
        unit = flag.split("=", 1)[1]
    elif flag in ("--unit", "-u", "-p", "--property", "--slice", "--uid", "--gid", "-E", "--setenv",
                  "--working-directory"):
        value = args.pop(0)
        if flag == "--unit" or flag == "-u":
            unit = value
        elif flag in ("-E", "--setenv"):
            key, _, val = value.partition("=")
            os.environ[key] = val
if not args:
    sys.exit("systemd-run (stand-in): no command given")
units = os.path.join(os.environ.get("BURLA_STANDIN_VM_DIR", "."), "units")
os.makedirs(units, exist_ok=True)
out = open(os.path.join(units, unit + ".log"), "ab")
if args[0] in ("python", "python3"):
    args[0] = sys.executable
subprocess.Popen(args, stdout=out, stderr=out, stdin=subprocess.DEVNULL)
print(f"Running as unit: {unit}.service", file=sys.stderr)
"""

_PYTHON = r"""
args = sys.argv[1:]
if args[:3] == ["-m", "pip", "install"]:
    sys.exit(0)  # recorded above; this Python already has the checkout's burla
os.execv(REAL_PYTHON, [REAL_PYTHON] + args)  # noqa: F821 - defined above by write_stubs
"""

_SHELL_STUBS = {
    "apt-get": 'printf "%s\\n" "apt-get $*" >> "${BURLA_STANDIN_VM_DIR:-.}/seam.log"\nexit 0\n',
    "apt": 'printf "%s\\n" "apt $*" >> "${BURLA_STANDIN_VM_DIR:-.}/seam.log"\nexit 0\n',
    "sudo": 'while [ "${1#-}" != "$1" ]; do shift; done\nexec "$@"\n',
}


def _write(path: Path, text: str) -> None:
    path.write_text(text)
    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)


def write_stubs(bin_dir: Path, *, has_gpus: bool) -> None:
    """Write the stub commands of one simulated VM into `bin_dir` (first on its PATH)."""
    bin_dir.mkdir(parents=True, exist_ok=True)
    python = sys.executable
    table = {kind: [gpu.smi_name, gpu.memory_mib] for kind, gpu in ACCELERATORS.items()}
    nvidia_smi = f"ACCELERATORS = {json.dumps(table)}\n" + _NVIDIA_SMI
    python_stub = f"REAL_PYTHON = {python!r}\n" + _PYTHON
    stubs = [("docker", _DOCKER), ("systemd-run", _SYSTEMD_RUN), ("python", python_stub), ("python3", python_stub)]
    stubs += [("nvidia-smi", nvidia_smi)] if has_gpus else []
    for name, body in stubs:
        _write(bin_dir / name, _PYTHON_STUB_HEADER.format(python=python, name=name) + body)
    for name, body in _SHELL_STUBS.items():
        _write(bin_dir / name, "#!/bin/bash\n# Written by burla_backend_gcp.standin.seam.\n" + body)


def gpu_spec(accelerators: list[tuple[str, int]]) -> str:
    """`[("nvidia-tesla-a100", 1)]` → `nvidia-tesla-a100:1`, as BURLA_STANDIN_VM_GPUS carries it."""
    return ",".join(f"{kind}:{count}" for kind, count in accelerators)

