"""The loopback guard: refuses every name lookup and connection to a host other than this machine.

Tests and the GCP stand-in must never reach Google (or anything else): a client whose endpoint
override was forgotten would otherwise quietly talk to the real service. `install()` wraps
`socket.getaddrinfo` and `socket.socket.connect`/`connect_ex` so that any other host raises
`NonLoopbackConnection` naming it. It guards Python-level sockets only: code in C with its own
resolver (grpc's core) is not covered, which is why the stand-in uses REST everywhere.

Child processes inherit the guard through the environment: `BURLA_NETGUARD=1` makes
`burla_backend_gcp.clients` (and every process the stand-in starts) call `install()` before it
builds a client; `python -m burla_backend_gcp.netguard CMD...` runs CMD's Python under it.
"""

from __future__ import annotations

import ipaddress
import os
import socket
import threading

ENV_VAR = "BURLA_NETGUARD"
_LOOPBACK_NAMES = frozenset({"localhost", "localhost.localdomain", "ip6-localhost", "ip6-loopback"})

_lock = threading.Lock()
_originals: dict[str, object] = {}
refused: list[str] = []  # every host refused in this process, for tests to inspect


class NonLoopbackConnection(ConnectionRefusedError):
    """A lookup or connection to a host other than this machine was refused by the guard."""


def is_loopback(host: object) -> bool:
    """True for names and addresses of this machine only (127.0.0.0/8, ::1, localhost)."""
    if host is None:
        return True  # getaddrinfo(None, port) is a lookup for binding, not a remote host
    if isinstance(host, bytes):
        host = host.decode("ascii", "replace")
    if not isinstance(host, str):
        return False
    name = host.strip("[]").split("%", 1)[0].lower().rstrip(".")
    if name in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def _refuse(host: object, what: str) -> None:
    refused.append(str(host))
    raise NonLoopbackConnection(
        f"burla netguard: {what} of {host!r} refused: only 127.0.0.1/localhost may be reached here "
        f"(set an endpoint override, e.g. BURLA_GCP_STANDIN, instead of the real service)"
    )


def _guarded_getaddrinfo(host, *args, **kwargs):
    if not is_loopback(host):
        _refuse(host, "name lookup")
    return _originals["getaddrinfo"](host, *args, **kwargs)


def _check_address(sock: socket.socket, address: object) -> None:
    if sock.family in (socket.AF_INET, socket.AF_INET6) and isinstance(address, tuple):
        if not is_loopback(address[0]):
            _refuse(address[0], "connection")


def _guarded_connect(self, address):
    _check_address(self, address)
    return _originals["connect"](self, address)


def _guarded_connect_ex(self, address):
    _check_address(self, address)
    return _originals["connect_ex"](self, address)


def install() -> None:
    """Guard this process (idempotent). Also sets BURLA_NETGUARD=1 so child processes can tell."""
    with _lock:
        if not _originals:
            _originals["getaddrinfo"] = socket.getaddrinfo
            _originals["connect"] = socket.socket.connect
            _originals["connect_ex"] = socket.socket.connect_ex
            socket.getaddrinfo = _guarded_getaddrinfo
            socket.socket.connect = _guarded_connect
            socket.socket.connect_ex = _guarded_connect_ex
    os.environ[ENV_VAR] = "1"


def uninstall() -> None:
    """Undo `install()` in this process (the environment variable is left to the caller)."""
    with _lock:
        if _originals:
            socket.getaddrinfo = _originals.pop("getaddrinfo")
            socket.socket.connect = _originals.pop("connect")
            socket.socket.connect_ex = _originals.pop("connect_ex")


def installed() -> bool:
    return bool(_originals)


def install_if_asked() -> None:
    """Install the guard when the environment asks for it (BURLA_NETGUARD=1)."""
    if os.environ.get(ENV_VAR) == "1":
        install()


def _main(argv: list[str]) -> None:
    """`python -m burla_backend_gcp.netguard script.py args...` or `-m module args...`."""
    import runpy
    import sys

    install()
    if argv[:1] == ["-m"] and len(argv) > 1:
        sys.argv = argv[1:]
        runpy.run_module(argv[1], run_name="__main__", alter_sys=True)
    elif argv:
        sys.argv = argv
        runpy.run_path(argv[0], run_name="__main__")
    else:
        raise SystemExit("usage: python -m burla_backend_gcp.netguard (-m MODULE | SCRIPT) [ARGS...]")


if __name__ == "__main__":
    import sys

    _main(sys.argv[1:])
