"""This process's connection to the Ray cluster: made once (ray.init takes seconds), kept for
every later call, and made quietly (Ray's own log lines never reach the caller's output)."""

from __future__ import annotations

import logging
import os
import threading

from burla_core.errors import InvalidArgument, NodeDisconnected

_lock = threading.Lock()
_connected_pid: int | None = None


def connected() -> bool:
    """Whether this process has a working Ray connection (a forked child's inherited one does not work)."""
    import ray

    return ray.is_initialized() and (_connected_pid is None or _connected_pid == os.getpid())


def connect(address: str | None) -> None:
    """Connect to `address` unless this process already is connected; None: use the existing
    connection. Another cluster than the one connected to is refused."""
    global _connected_pid
    import ray

    with _lock:
        if ray.is_initialized():
            if address is not None:
                current = ray.get_runtime_context().gcs_address
                if not _same_address(current, address):
                    raise InvalidArgument(
                        f"this process is already connected to the Ray cluster at {current}, not {address}: "
                        "Ray allows one cluster per process (call ray.shutdown() first to change)"
                    )
            return
        try:
            ray.init(
                address=address,
                log_to_driver=False,  # the function's output reaches the caller through Burla, per input
                logging_level=logging.WARNING,
                namespace="burla",
            )
        except (ConnectionError, RuntimeError, ValueError) as error:
            raise NodeDisconnected(
                f"cannot connect to the Ray cluster at {address} ({type(error).__name__}: {error}); is it "
                "running, and is the address right (backend_options['address'] or RAY_ADDRESS)?"
            ) from None
        _connected_pid = os.getpid()
        _keep_ray_errors_off_stdout()


def _keep_ray_errors_off_stdout() -> None:
    """Ray prints cluster errors ("(raylet) A worker died ...") to the caller's stdout, which in
    Burla holds only the function's output: send them to stderr instead. Ray's listener looks
    the printer up in its module at each message, so wrapping it there is enough; a Ray without
    it keeps its behaviour."""
    try:
        from ray._private import worker as ray_worker
    except ImportError:
        return
    printer = getattr(ray_worker, "print_to_stdstream", None)
    if printer is None or getattr(printer, "burla_wrapped", False):
        return

    def to_stderr(data, *args, **kwargs):
        if isinstance(data, dict) and data.get("pid") == "raylet" and not data.get("is_err"):
            data = dict(data, is_err=True)
        return printer(data, *args, **kwargs)

    to_stderr.burla_wrapped = True  # type: ignore[attr-defined]
    ray_worker.print_to_stdstream = to_stderr


def _same_address(current: str, wanted: str) -> bool:
    return wanted == "auto" or _normal(current) == _normal(wanted)


def _normal(address: str) -> str:
    host, _, port = address.rpartition(":")
    return f"{'127.0.0.1' if host in ('localhost', '::1') else host}:{port}"


def gcs_address() -> str:
    import ray

    return ray.get_runtime_context().gcs_address
