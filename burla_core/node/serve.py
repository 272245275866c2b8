"""Running the node agent: listen (HTTP or TLS), announce the URL, stop on SIGTERM / SIGINT or
an idle shutdown."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import stat

from aiohttp import web

from .agent import NodeAgent
from .settings import AgentConfig, check_config

log = logging.getLogger("burla.node")


def _close_inherited_sockets() -> None:
    """In a forked worker: close the agent's sockets, so that a connection the agent closes is
    really closed (a copy held by a worker would keep it open) and a restarted agent can bind
    its port at once."""
    try:
        signal.set_wakeup_fd(-1)  # the agent's event loop's, about to be closed here
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
    except (ValueError, OSError):
        pass
    try:
        fds = [int(name) for name in os.listdir("/proc/self/fd")]
    except OSError:
        return
    for fd in fds:
        try:
            if stat.S_ISSOCK(os.fstat(fd).st_mode):
                os.close(fd)
        except OSError:
            pass


async def serve(config: AgentConfig, ready=None) -> None:
    """Run the agent until SIGTERM/SIGINT or an idle shutdown. `ready(url)` is called once it listens."""
    context = check_config(config)
    agent = NodeAgent(config)
    app = agent.make_app()
    runner = web.AppRunner(app, access_log=log if config.access_log else None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, config.host, config.port, ssl_context=context, backlog=256)
    await site.start()
    os.register_at_fork(after_in_child=_close_inherited_sockets)
    sockets = site._server.sockets if site._server is not None else []
    port = sockets[0].getsockname()[1] if sockets else config.port
    scheme = "https" if context else "http"
    host = f"[{config.host}]" if ":" in config.host else config.host
    url = f"{scheme}://{host}:{port}"
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, agent.stopping.set)
    capacity = agent.capacity
    log.info(
        "burla node agent %s listening on %s: %d CPUs, %.1f GB RAM, %d GPU(s), image %s",
        config.name, url, capacity.cpus, capacity.ram_gb, len(capacity.gpus), capacity.image,
    )
    if ready is not None:
        ready(url)
    agent.setup.warm_up()
    try:
        await agent.stopping.wait()
    finally:
        await runner.cleanup()
