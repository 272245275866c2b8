"""How a node agent is configured, and the checks that refuse a configuration that would be
unsafe (no token; plain HTTP on a non-loopback address without --insecure)."""

from __future__ import annotations

import ipaddress
import os
import socket
import ssl
from dataclasses import dataclass, field

from .capacity import NodeCapacity
from .environments import DEFAULT_CACHE_BYTES
from .installer import DEFAULT_INSTALL_SECONDS
from .token import TOKEN_ENV, read_token  # noqa: F401  (the agent's token, read in one place)


HOLD_SECONDS = 5.0  # a batch upload waits this long for room before it is told 429


class AgentConfigError(Exception):
    """The agent cannot start as configured; the message says what to change."""


@dataclass
class AgentConfig:
    token: str
    host: str = "127.0.0.1"
    port: int = 8701
    tls_cert: str | None = None
    tls_key: str | None = None
    insecure: bool = False
    name: str = field(default_factory=socket.gethostname)
    capacity: NodeCapacity | None = None
    idle_shutdown: float | None = None
    shutdown_command: str = "shutdown -h now"
    job_lease: float = 30.0
    max_pending_bytes: int = 1024 * 1000 * 1000
    upload_hold_seconds: float = HOLD_SECONDS
    access_log: bool = False
    # Environment sync (job_setup.py): jobs' packages and local code, cached under env_cache_dir.
    sync_packages: bool = True
    env_cache_dir: str | None = None  # default: the user's cache directory, burla/node-environments
    env_cache_bytes: int = DEFAULT_CACHE_BYTES
    installer: str = "auto"  # auto (uv, else pip), uv or pip
    install_timeout: float = DEFAULT_INSTALL_SECONDS


def default_env_cache_dir() -> str:
    import platformdirs

    return os.path.join(platformdirs.user_cache_dir("burla"), "node-environments")


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def tls_context(cert: str | None, key: str | None) -> ssl.SSLContext | None:
    if not cert and not key:
        return None
    if not (cert and key):
        raise AgentConfigError("TLS needs both --tls-cert and --tls-key")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        context.load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as error:
        raise AgentConfigError(f"cannot load the TLS certificate {cert} / key {key}: {error}") from None
    return context


def check_config(config: AgentConfig) -> ssl.SSLContext | None:
    if not config.token or not config.token.strip():
        raise AgentConfigError(
            "the node agent refuses to start without a token: pass --token-file FILE or set BURLA_NODE_TOKEN "
            "(make one with `burla node token`)"
        )
    context = tls_context(config.tls_cert, config.tls_key)
    if context is None and not is_loopback(config.host) and not config.insecure:
        raise AgentConfigError(
            f"refusing to listen on {config.host} without TLS: the token and your data would cross the network "
            "in clear text. Pass --tls-cert and --tls-key, or --insecure if the network is private and you accept that."
        )
    return context
