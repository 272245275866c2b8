"""Worker pools whose workers are started by a command and speak the pool's protocol over stdio.

    WorkerPool._start_worker ──► Popen(command) ──stdin──► python -m burla_core.worker --stdio
                                              ◄─stdout── (the same messages as a forked worker's)

A forked worker inherits its parent's imports; a worker started by a command has only what the
command gives it: another Python environment (a job's packages on a node), or a container image
(burla_backend_local.containers). Such a worker shares with the pool only the number of the input
it runs (a memfd it is passed, sharedindex.py; a worker in a container, which cannot be passed
one, reports each input's start on stdout instead), and cancelation is a signal to its process
alone.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import uuid
import weakref
from types import SimpleNamespace

from multiprocess.connection import Connection

from .capture import OUTPUT_FDS_ENV, PoolOutput
from .sharedindex import INDEX_FD_ENV, SharedIndex
from .pool import Worker, WorkerPool


class StdioProcess:
    """The bits of a multiprocess.Process the pool uses, for a worker started by a command, and
    the name the pool gave it (a container's name, so that the container itself can be removed)."""

    def __init__(self, popen: subprocess.Popen, name: str) -> None:
        self.popen = popen
        self.name = name
        self.pid = popen.pid
        # The pool waits on `sentinel` like on a forked worker's: a pidfd becomes readable when
        # the process exits; without pidfds, a thread closes a pipe when it does.
        if hasattr(os, "pidfd_open"):
            self.sentinel = os.pidfd_open(popen.pid)
        else:
            self.sentinel, write_end = os.pipe()
            threading.Thread(target=lambda: (popen.wait(), os.close(write_end)), daemon=True).start()
        # Closed once the pool has let go of this worker, as a forked worker's sentinel is: a
        # node agent that starts workers for months must not keep a descriptor for each.
        weakref.finalize(self, os.close, self.sentinel)

    def is_alive(self) -> bool:
        return self.popen.poll() is None

    @property
    def exitcode(self) -> int | None:
        return self.popen.poll()

    def join(self, timeout: float | None = None) -> None:
        try:
            self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            pass


class StdioWorkerPool(WorkerPool):
    """A WorkerPool whose workers run `command(gpu_index, name)` with `environment(gpu_index)`;
    `name` is unique to the worker (burla-worker-PID-RANDOM). The worker reads its own output;
    it gets its output pipes from the pool (`passes_output_pipes`), which keeps a copy of their
    read ends, so that what a worker wrote just before it died still reaches its input."""

    #: False where the pool's descriptors cannot reach the worker (a container's).
    passes_output_pipes = True

    def command(self, gpu_index: int | None, name: str) -> list[str]:
        raise NotImplementedError

    def environment(self, gpu_index: int | None) -> dict | None:
        """The worker's environment variables (None: this process's)."""
        if gpu_index is None:
            return None
        return dict(os.environ, CUDA_VISIBLE_DEVICES=str(gpu_index))

    def _start_worker(self, profile: tuple, gpu_index: int | None) -> Worker:
        name = f"burla-worker-{os.getpid()}-{uuid.uuid4().hex[:12]}"
        env = self.environment(gpu_index)
        output = PoolOutput.for_stdio_worker() if self.passes_output_pipes else PoolOutput()
        pass_fds = output.child_fds
        # Where the worker can get a descriptor of ours, the input it runs is a number in memory
        # we share (as with a forked worker) instead of a message it writes before each input.
        shared = SharedIndex.create() if self.passes_output_pipes else None
        if output.child_fds or shared is not None:
            env = dict(os.environ if env is None else env)
        if output.child_fds:
            env[OUTPUT_FDS_ENV] = output.child_env_value()
        if shared is not None:
            env[INDEX_FD_ENV] = str(shared.fd)
            pass_fds = (*pass_fds, shared.fd)
        try:
            popen = subprocess.Popen(
                self.command(gpu_index, name), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                stderr=None,  # fd 2, whatever sys.stderr is now
                env=env, pass_fds=pass_fds,
            )
        finally:
            output.after_child_started()
            if shared is not None:
                shared.after_child_started()
        inbox = Connection(os.dup(popen.stdin.fileno()), readable=False)
        outbox = Connection(os.dup(popen.stdout.fileno()), writable=False)
        popen.stdin.close()
        popen.stdout.close()
        return Worker(
            StdioProcess(popen, name),
            inbox,
            outbox,
            shared.value if shared is not None else SimpleNamespace(value=-1),  # else from its "s" reports
            SimpleNamespace(value=0),
            SimpleNamespace(value=0),
            profile,
            output=output,
        )


# Run by `python -c` before anything else is imported: the job's directories go first on the
# import path, with their .pth files read (site.addsitedir), and only then is burla's worker
# imported, so that even the packages burla itself uses come in the job's versions.
ENVIRONMENT_BOOTSTRAP = """\
import site, sys
before = list(sys.path)
for directory in sys.argv[1:]:
    site.addsitedir(directory)
front = [entry for entry in sys.argv[1:] if entry in sys.path]
added = [entry for entry in sys.path if entry not in before and entry not in front]
sys.path[:] = front + added + [entry for entry in before if entry not in front]
sys.argv[1:] = []
from burla_core.worker import stdio_main
stdio_main()
"""


class EnvironmentWorkerPool(StdioWorkerPool):
    """Workers of this Python whose import path starts with `site_dirs` (a job's packages)."""

    def __init__(self, site_dirs: list[str], python: str = sys.executable) -> None:
        super().__init__()
        self.site_dirs = list(site_dirs)
        self.python = python

    def command(self, gpu_index: int | None, name: str) -> list[str]:
        return [self.python, "-c", ENVIRONMENT_BOOTSTRAP, *self.site_dirs]

    def environment(self, gpu_index: int | None) -> dict | None:
        env = dict(os.environ)
        # Subprocesses the function starts see the job's packages too.
        existing = [entry for entry in env.get("PYTHONPATH", "").split(os.pathsep) if entry]
        env["PYTHONPATH"] = os.pathsep.join(self.site_dirs + [e for e in existing if e not in self.site_dirs])
        if gpu_index is not None:
            env["CUDA_VISIBLE_DEVICES"] = str(gpu_index)
        return env
