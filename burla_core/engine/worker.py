"""`python -m burla_core.engine.worker PARENT_PID`: one Burla worker process inside an engine's
worker (a Dask worker, a Ray worker), speaking the pool's protocol over stdin and stdout.

It is a fresh interpreter, not a fork of the engine's process: a fork would inherit the engine's
connections (Ray's core worker, Dask's event loop) in a state that hangs the first nested
remote_parallel_map. It exits when PARENT_PID does (an engine that kills its worker process on
cancel or on the caller's exit must not leave the call running).
"""

from __future__ import annotations

import os
import sys
import threading
import time

PARENT_WATCH_SECONDS = 0.25


def _watch_parent(parent_pid: int) -> None:
    while True:
        time.sleep(PARENT_WATCH_SECONDS)
        if os.getppid() != parent_pid:
            os._exit(1)


def main(argv: list[str]) -> None:
    if len(argv) != 1 or not argv[0].isdigit():
        sys.exit("usage: python -m burla_core.engine.worker PARENT_PID  (started by an engine backend's task)")
    threading.Thread(target=_watch_parent, args=(int(argv[0]),), name="burla-parent-watch", daemon=True).start()
    from burla_core.worker import stdio_main

    stdio_main()


if __name__ == "__main__":
    main(sys.argv[1:])
