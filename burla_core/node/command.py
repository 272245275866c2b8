"""The node agent's own commands: `start` (serve until stopped) and `token` (make a token).

`python -m burla_core.node start ...` runs them without the `burla` CLI; `burla node start` and
`burla node token` are the same commands. Importing this module loads no aiohttp (`burla --help`
stays fast): the agent is imported when `start` runs.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import secrets
import sys
import tempfile

import click

from ..clitypes import PORT, FiniteFloat, NonEmpty, ReadableFile, TokenFile

from .token import TOKEN_ENV, read_token


def env_token() -> str | None:
    return read_token(None)


@click.command()
@click.option("--host", type=NonEmpty(), default="127.0.0.1", show_default=True, help="Address to listen on (0.0.0.0: every interface; needs TLS or --insecure).")
@click.option("--port", default=8701, show_default=True, type=PORT, help="Port to listen on (0: any free port).")
@click.option("--token-file", "file_token", type=TokenFile(), help=f"File holding the bearer token (else ${TOKEN_ENV}).")
@click.option("--tls-cert", type=ReadableFile(), help="PEM certificate: serve HTTPS (with --tls-key).")
@click.option("--tls-key", type=ReadableFile(), help="PEM private key of --tls-cert.")
@click.option("--insecure", is_flag=True, help="Allow plain HTTP on a non-loopback address (private networks only).")
@click.option("--name", type=NonEmpty(), default=None, help="This node's name in health and logs (default: the host name).")
@click.option("--cpus", type=click.IntRange(min=1), default=None, help="CPUs to offer (default: all this process may use).")
@click.option("--ram-gb", type=FiniteFloat(min=0.5), default=None, help="GB of RAM to offer (default: 90% of it).")
@click.option("--image", type=NonEmpty(), default=None, help="The container image this agent runs in; calls with image= must match it.")
@click.option("--idle-shutdown", type=FiniteFloat(min=0.1), default=None, help="Seconds with no job and no request before the shutdown command runs.")
@click.option("--shutdown-command", type=NonEmpty(), default="shutdown -h now", show_default=True, help="Shell command run at idle shutdown (then the agent exits).")
@click.option("--job-lease", type=FiniteFloat(min=1), default=30.0, show_default=True, help="Seconds a job survives its caller's silence (detached jobs: forever).")
@click.option("--max-pending-mb", type=click.IntRange(min=1), default=1024, show_default=True, help="MB of queued inputs held before uploads are told to wait.")
@click.option("--upload-hold", type=FiniteFloat(min=0), default=5.0, show_default=True, help="Seconds an upload waits for room before it is told 429.")
@click.option("--access-log", is_flag=True, help="Log every request (never the token).")
@click.option("--no-sync-packages", is_flag=True, help="Run every job in this agent's own environment: never install a caller's packages.")
@click.option("--env-cache", type=click.Path(file_okay=False), default=None, help="Directory of the jobs' environments (default: the user's cache directory).")
@click.option("--env-cache-gb", type=FiniteFloat(min=0.1), default=20.0, show_default=True, help="Disk cap of that directory; least recently used environments go first.")
@click.option("--installer", type=click.Choice(["auto", "uv", "pip"]), default="auto", show_default=True, help="What installs jobs' packages (auto: uv, else pip).")
@click.option("--install-timeout", type=FiniteFloat(min=1), default=1800.0, show_default=True, help="Seconds one environment's install may take.")
@click.option("--secrets-on-stdin", is_flag=True, help='Read the token (and TLS certificate and key) as one JSON line on stdin, {"token": ..., "tls_cert": PEM, "tls_key": PEM}, instead of --token-file/--tls-cert/--tls-key: a supervisor can start the agent while it still fetches them, and they never touch the disk.')
def start(host, port, file_token, tls_cert, tls_key, insecure, name, cpus, ram_gb, image, idle_shutdown,
          shutdown_command, job_lease, max_pending_mb, upload_hold, access_log, no_sync_packages, env_cache,
          env_cache_gb, installer, install_timeout, secrets_on_stdin) -> None:
    """Start the node agent and serve until stopped (SIGTERM or Ctrl-C).

    It prints "burla node agent listening on URL" once it accepts requests, and logs to stderr.
    It needs a token (--token-file or $BURLA_NODE_TOKEN; make one with `burla node token`), and
    TLS (--tls-cert and --tls-key) to listen on anything but a loopback address, unless
    --insecure.

    \b
    Examples:
      burla node start --port 8701
      burla node start --host 0.0.0.0 --token-file ~/.burla-node-token \\
          --tls-cert node.pem --tls-key node-key.pem --cpus 8 --ram-gb 30

    Exit status: 0 when stopped, 1 when it cannot listen or serve, 2 for a usage error (a bad
    option value, no token, TLS files that do not load, plain HTTP on a network address).
    """
    if secrets_on_stdin and (file_token or tls_cert or tls_key):
        raise click.UsageError("--secrets-on-stdin replaces --token-file, --tls-cert and --tls-key: pass one or the other")
    from concurrent.futures import ThreadPoolExecutor

    from burla_core.machine import cpu_count, usable_ram_gb
    from burla_core.node.capacity import measure_capacity

    # The machine is measured (nvidia-smi can take a while) while the agent's modules import.
    with ThreadPoolExecutor(1, thread_name_prefix="burla-measure") as executor:
        measured = executor.submit(measure_capacity, cpus, ram_gb, image)
        from burla_core.node.serve import serve
        from burla_core.node.settings import AgentConfig, AgentConfigError, check_config

        capacity = measured.result()
    # A supervisor fetches the secrets while all that ran.
    if secrets_on_stdin:
        token, tls_cert, tls_key = read_secrets(sys.stdin)
    else:
        token = file_token or env_token()
    if not token:
        raise click.UsageError(
            f"no token: pass --token-file FILE or set {TOKEN_ENV} (make one with `burla node token`)"
        )
    if tls_key and not tls_cert:
        raise click.UsageError("--tls-key needs --tls-cert: TLS takes a certificate and its key")
    if tls_cert and not tls_key:
        raise click.UsageError("--tls-cert needs --tls-key: TLS takes a certificate and its key")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s burla-node %(levelname)s %(message)s", stream=sys.stderr)
    config = AgentConfig(
        token=token,
        host=host,
        port=port,
        tls_cert=tls_cert,
        tls_key=tls_key,
        insecure=insecure,
        capacity=capacity,
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
    try:
        check_config(config)  # TLS files that do not load, plain HTTP on a network address
    except AgentConfigError as error:
        raise click.UsageError(str(error)) from None
    if len(token) < 16:
        click.echo("burla node: warning: the token is shorter than 16 characters; use `burla node token`", err=True)
    # More than the machine has is allowed (calls then share it), but rarely meant.
    if cpus is not None and cpus > cpu_count():
        click.echo(f"burla node: warning: --cpus {cpus} offers more CPUs than this process may use ({cpu_count()})", err=True)
    if ram_gb is not None and ram_gb > usable_ram_gb():
        click.echo(f"burla node: warning: --ram-gb {ram_gb:g} offers more than the {usable_ram_gb():.1f} GB usable here", err=True)

    def ready(url: str) -> None:
        click.echo(f"burla node agent listening on {url}")
        sys.stdout.flush()

    try:
        asyncio.run(serve(config, ready=ready))
    except AgentConfigError as error:
        raise click.ClickException(str(error)) from None
    except OSError as error:
        raise click.ClickException(f"cannot listen on {host}:{port}: {error.strerror or error}") from None


def read_secrets(stream) -> tuple[str, str | None, str | None]:
    """(token, certificate path, key path) from one JSON line of `stream` (--secrets-on-stdin).
    The PEMs go into anonymous memory files where the system has them (Linux), else into
    private temporary files removed when the agent exits."""
    line = stream.readline()
    try:
        secrets_ = json.loads(line)
        if not isinstance(secrets_, dict):
            raise ValueError("not a JSON object")
    except ValueError as error:
        what = "nothing (stdin closed)" if not line else f"a line that is not a JSON object ({error})"
        raise click.UsageError(f'--secrets-on-stdin: expected {{"token": ..., "tls_cert": PEM, "tls_key": PEM}} '
                               f"on stdin, got {what}") from None
    token = secrets_.get("token")
    if not isinstance(token, str) or not token.strip():
        raise click.UsageError('--secrets-on-stdin: the JSON line has no "token"')
    cert, key = secrets_.get("tls_cert"), secrets_.get("tls_key")
    if bool(cert) != bool(key):
        raise click.UsageError('--secrets-on-stdin: TLS takes both "tls_cert" and "tls_key"')
    if not cert:
        return token.strip(), None, None
    return token.strip(), private_file("node.pem", cert), private_file("node-key.pem", key)


def private_file(name: str, text: str) -> str:
    """A path to `text` that only this process (and its children) can read."""
    if hasattr(os, "memfd_create"):
        fd = os.memfd_create(name, os.MFD_CLOEXEC)  # lives as long as the agent; never on disk
        os.write(fd, text.encode())
        return f"/proc/self/fd/{fd}"
    import atexit
    import shutil

    directory = tempfile.mkdtemp(prefix="burla-node-tls-")  # 0700
    atexit.register(shutil.rmtree, directory, ignore_errors=True)
    path = os.path.join(directory, name)
    with open(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as handle:
        handle.write(text)
    return path


@click.command()
def token() -> None:
    """Print a new random token (give the same one to every agent and every caller).

    \b
    Example:
      burla node token > burla-node-token && chmod 600 burla-node-token
      burla node start --token-file burla-node-token
    """
    click.echo(secrets.token_urlsafe(32))
