"""`burla node ...`: run the node agent on a machine you have, and look at the jobs it runs.

The `burla` command adds this group with `cli.add_command(node)`; until then the same commands
run as `python -m burla_core.node ...`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import secrets
import sys

import click

TOKEN_ENV = "BURLA_NODE_TOKEN"


def read_token(token_file: str | None) -> str | None:
    if token_file:
        try:
            with open(token_file, encoding="utf-8") as handle:
                return handle.read().strip() or None
        except OSError as error:
            raise click.ClickException(f"cannot read the token file {token_file}: {error.strerror}") from None
    return (os.environ.get(TOKEN_ENV) or "").strip() or None


@click.group()
def node() -> None:
    """Run the Burla node agent on this machine, so that callers can run jobs on it.

    A cluster of your own machines is one agent per machine, all with the same token; callers
    name them with BURLA_NODES=http(s)://host:port,... and backend="nodes". See docs/nodes.md.
    """


@node.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on (0.0.0.0: every interface).")
@click.option("--port", default=8701, show_default=True, type=int, help="Port to listen on (0: any free port).")
@click.option("--token-file", type=click.Path(dir_okay=False), help=f"File holding the bearer token (else ${TOKEN_ENV}).")
@click.option("--tls-cert", type=click.Path(exists=True, dir_okay=False), help="PEM certificate: serve HTTPS.")
@click.option("--tls-key", type=click.Path(exists=True, dir_okay=False), help="PEM private key of --tls-cert.")
@click.option("--insecure", is_flag=True, help="Allow plain HTTP on a non-loopback address (private networks only).")
@click.option("--name", default=None, help="This node's name in health and logs (default: the host name).")
@click.option("--cpus", type=click.IntRange(min=1), default=None, help="CPUs to offer (default: all this process may use).")
@click.option("--ram-gb", type=click.FloatRange(min=0.5), default=None, help="GB of RAM to offer (default: 90% of it).")
@click.option("--image", default=None, help="The container image this agent runs in; calls with image= must match it.")
@click.option("--idle-shutdown", type=click.FloatRange(min=0.1), default=None, help="Seconds with no job and no request before the shutdown command runs.")
@click.option("--shutdown-command", default="shutdown -h now", show_default=True, help="Shell command run at idle shutdown (then the agent exits).")
@click.option("--job-lease", type=click.FloatRange(min=1), default=30.0, show_default=True, help="Seconds a job survives its caller's silence (detached jobs: forever).")
@click.option("--max-pending-mb", type=click.IntRange(min=1), default=1024, show_default=True, help="MB of queued inputs held before uploads are told to wait.")
@click.option("--upload-hold", type=click.FloatRange(min=0), default=5.0, show_default=True, help="Seconds an upload waits for room before it is told 429.")
@click.option("--access-log", is_flag=True, help="Log every request (never the token).")
@click.option("--no-sync-packages", is_flag=True, help="Run every job in this agent's own environment: never install a caller's packages.")
@click.option("--env-cache", type=click.Path(file_okay=False), default=None, help="Directory of the jobs' environments (default: the user's cache directory).")
@click.option("--env-cache-gb", type=click.FloatRange(min=0.1), default=20.0, show_default=True, help="Disk cap of that directory; least recently used environments go first.")
@click.option("--installer", type=click.Choice(["auto", "uv", "pip"]), default="auto", show_default=True, help="What installs jobs' packages (auto: uv, else pip).")
@click.option("--install-timeout", type=click.FloatRange(min=1), default=1800.0, show_default=True, help="Seconds one environment's install may take.")
def start(host, port, token_file, tls_cert, tls_key, insecure, name, cpus, ram_gb, image, idle_shutdown,
          shutdown_command, job_lease, max_pending_mb, upload_hold, access_log, no_sync_packages, env_cache,
          env_cache_gb, installer, install_timeout) -> None:
    """Start the node agent and serve until stopped (SIGTERM or Ctrl-C)."""
    from burla_core.node.agent import AgentConfig, AgentConfigError, measure_capacity, serve

    logging.basicConfig(level=logging.INFO, format="%(asctime)s burla-node %(levelname)s %(message)s", stream=sys.stderr)
    token = read_token(token_file)
    config = AgentConfig(
        token=token or "",
        host=host,
        port=port,
        tls_cert=tls_cert,
        tls_key=tls_key,
        insecure=insecure,
        capacity=measure_capacity(cpus, ram_gb, image),
        idle_shutdown=idle_shutdown,
        shutdown_command=shutdown_command,
        job_lease=job_lease,
        max_pending_bytes=max_pending_mb * 1000 * 1000,
        upload_hold_seconds=upload_hold,
        access_log=access_log,
        sync_packages=not no_sync_packages,
        env_cache_dir=env_cache,
        env_cache_bytes=int(env_cache_gb * 1000**3),
        installer=installer,
        install_timeout=install_timeout,
    )
    if name:
        config.name = name
    if token and len(token) < 16:
        click.echo("burla node: warning: the token is shorter than 16 characters; use `burla node token`", err=True)

    def ready(url: str) -> None:
        click.echo(f"burla node agent listening on {url}")
        sys.stdout.flush()

    try:
        asyncio.run(serve(config, ready=ready))
    except AgentConfigError as error:
        raise click.ClickException(str(error)) from None
    except OSError as error:
        raise click.ClickException(f"cannot listen on {host}:{port}: {error.strerror or error}") from None


@node.command()
def token() -> None:
    """Print a new random token (give the same one to every agent and every caller)."""
    click.echo(secrets.token_urlsafe(32))


def _client_options(nodes: str | None, token_file: str | None) -> tuple[list[str], str]:
    from burla_backend_nodes.provisioner import parse_node_list

    urls = parse_node_list(nodes or os.environ.get("BURLA_NODES", ""))
    if not urls:
        raise click.ClickException("no nodes given: pass --nodes URL,URL or set BURLA_NODES")
    token_value = read_token(token_file)
    if not token_value:
        raise click.ClickException(f"no token: pass --token-file FILE or set {TOKEN_ENV}")
    return urls, token_value


def cluster_options(command):
    """--nodes and --token-file: which agents to ask, and the token they share."""
    command = click.option("--token-file", type=click.Path(dir_okay=False), help=f"File holding the token (else ${TOKEN_ENV}).")(command)
    return click.option("--nodes", default=None, help="Comma-separated node URLs (default: $BURLA_NODES).")(command)


@node.command()
@cluster_options
def health(nodes, token_file) -> None:
    """Print each node's health: slots, CPUs, RAM, GPUs, image, versions."""
    from burla_core.node.client import node_client

    urls, token_value = _client_options(nodes, token_file)
    for url in urls:
        try:
            report = node_client(url, token_value).health(timeout=5)
        except Exception as error:
            report = {"error": str(error)}
        click.echo(json.dumps({"url": url, **report}, indent=2))


@node.command()
@cluster_options
def jobs(nodes, token_file) -> None:
    """List the jobs on each node (detached ones stay until collected)."""
    from burla_core.node.client import node_client

    urls, token_value = _client_options(nodes, token_file)
    for url in urls:
        try:
            listed = node_client(url, token_value).list_jobs(timeout=5)
        except Exception as error:
            click.echo(f"{url}: {error}", err=True)
            continue
        for job in listed:
            click.echo(
                f"{url}  {job['job_id']}  {job['function_name']}  {job['state']}  "
                f"{job['done']} done, {job['failed']} failed, {job['queued_inputs']} queued"
                + ("  (detached)" if job["detach"] else "")
            )
