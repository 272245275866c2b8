"""`burla gcp`: commands about backend "gcp": `simulate` (the GCP stand-in in the foreground),
`cluster` (a whole simulated cluster on 127.0.0.1) and `issue-token` (an administrator gives a
user a burla token)."""

from __future__ import annotations

import math
import shlex
import signal
import sys
import threading

import click


def _finite_seconds(ctx: click.Context, param: click.Parameter, value: float) -> float:
    if not math.isfinite(value) or value < 0:
        raise click.BadParameter(f"{value!r} is not a number of seconds (0 or more)")
    return value


@click.group()
def gcp() -> None:
    """Backend "gcp" tools: a simulated Google Cloud and cluster on this machine (no Google
    account), and issuing user tokens.

    \b
    Examples:
        burla gcp simulate            # Google Cloud's APIs on 127.0.0.1, until Ctrl-C
        burla gcp cluster --nodes 2   # a whole gcp cluster on 127.0.0.1, until Ctrl-C
    """


@gcp.command()
@click.option("--port", type=click.IntRange(0, 65535), default=0, show_default=True,
              help="Port of the stand-in's APIs (0: any free port).")
@click.option("--project", default="burla-standin", show_default=True, help="The simulated project's id.")
@click.option("--boot-delay", type=float, default=0.0, show_default=True, callback=_finite_seconds,
              help="Seconds a simulated VM takes to boot before its startup script runs.")
@click.option("--run-image", "run_images", multiple=True, metavar="IMAGE=COMMAND",
              help="Play a Cloud Run image with a local command (repeatable), e.g. "
                   "'gcr.io/p/svc:*=python -m my_service'.")
@click.option("--firestore/--no-firestore", default=True, show_default=True,
              help="Start Google's Firestore emulator too.")
@click.option("--root", type=click.Path(file_okay=False), default=None,
              help="Folder for simulated VMs' and services' files and logs (default: a temporary one).")
def simulate(port: int, project: str, boot_delay: float, run_images: tuple[str, ...], firestore: bool,
             root: str | None) -> None:
    """Run Google Cloud's APIs on 127.0.0.1, with no Google account, until Ctrl-C.

    Prints the environment variables that point the gcp backend and the Google client libraries at
    it (as the project's owner), and gcloud's project as the simulated one, so that `burla
    install` installs there. VMs become local processes running their startup scripts; Cloud Run
    services become local processes. See docs/gcp-standin.md.

    \b
    Examples:
        burla gcp simulate
        burla gcp simulate --boot-delay 5 --run-image 'gcr.io/my-project/svc:*=python -m my_service'

    Then, in another shell, paste the `export` lines it printed.
    """
    try:
        from burla_backend_gcp.standin import StandIn
        from burla_backend_gcp.standin.firestore import EmulatorNotFound
    except ImportError as exc:
        raise click.ClickException(f"the stand-in needs the gcp extras: pip install 'burla-open[gcp-standin]' ({exc})")
    # `burla install` deploys the cluster service on this image (its command is the service's own
    # bootstrap), so the stand-in plays it with this Python unless told otherwise.
    from burla_backend_gcp.install.service import SERVICE_IMAGE

    table: dict[str, list[str]] = {SERVICE_IMAGE: ["python"]}
    for item in run_images:
        image, sep, command = item.partition("=")
        if not sep or not image or not command.strip():
            raise click.BadParameter(f"expected IMAGE=COMMAND, got {item!r}", param_hint="--run-image")
        table[image] = shlex.split(command)
    standin = StandIn(project_id=project, port=port, boot_delay_s=boot_delay, run_images=table, firestore=firestore,
                      root=root)
    try:
        standin.start()
    except EmulatorNotFound as exc:
        raise click.ClickException(f"{exc} Or pass --no-firestore.")
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    try:
        env = standin.environment()
        env["CLOUDSDK_CORE_PROJECT"] = project  # gcloud's current project, which `burla install` uses
        shown = ["BURLA_GCP_STANDIN", "GOOGLE_CLOUD_PROJECT", "CLOUDSDK_CORE_PROJECT", "GCE_METADATA_HOST",
                 "GCE_METADATA_IP", "BURLA_METADATA_URL", "FIRESTORE_EMULATOR_HOST"]
        click.echo(f"# GCP stand-in for project {project!r} on {standin.url} (files in {standin.root}).")
        click.echo("# Export these to use it (credentials are the project owner's, through a metadata server):")
        for key in shown:
            if key in env:
                click.echo(f"export {key}={shlex.quote(env[key])}")
        click.echo("unset NO_GCE_CHECK GOOGLE_APPLICATION_CREDENTIALS  # google.auth must ask the metadata server")
        click.echo("# Ctrl-C stops it and everything it started.", err=True)
        sys.stdout.flush()  # the lines are for another shell: a pipe or file must get them now
        while not stop.wait(0.5):
            pass
    finally:
        standin.stop()


@gcp.command(name="cluster")
@click.option("--nodes", type=click.IntRange(0, 16), default=2, show_default=True,
              help="Standing nodes to boot (0: none; grow=True boots them).")
@click.option("--boot-delay", type=float, default=0.5, show_default=True, callback=_finite_seconds,
              help="Seconds a simulated VM takes to boot before its startup script runs.")
@click.option("--machine-type", default=None, help="The nodes' machine type (default: a 2-vCPU one).")
def simulated_cluster(nodes: int, boot_delay: float, machine_type: str | None) -> None:
    """Run a whole gcp cluster on 127.0.0.1 until Ctrl-C: the stand-in, a cluster set up in it
    the way `burla install` sets one up, its service, and NODES simulated nodes.

    Prints the two variables that make remote_parallel_map(..., backend="gcp") use it. See
    docs/gcp.md.

    \b
    Example:
        burla gcp cluster --nodes 2
        # in another shell, paste the export lines, then:
        python -c 'import burla; print(burla.remote_parallel_map(abs, [-1, -2], backend="gcp"))'
    """
    try:
        from burla_backend_gcp.testenv import running_cluster, test_config
    except ImportError as exc:
        raise click.ClickException(f"the simulated cluster needs the gcp extras: pip install 'burla-open[gcp-standin]' ({exc})")
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    config = test_config(**({"machine_type": machine_type} if machine_type else {}))
    click.echo(f"# starting the stand-in, setting up a cluster and booting {nodes} node(s)...", err=True)
    with running_cluster(nodes=nodes, boot_delay_s=boot_delay, config=config) as running:
        click.echo(f"# a gcp cluster on {running.cluster.url} (project {running.cluster.project!r}).")
        for key, value in running.env.items():
            click.echo(f"export {key}={shlex.quote(value)}")
        click.echo("# Ctrl-C stops it and everything it started.", err=True)
        while not stop.wait(0.5):
            pass


@gcp.command(name="issue-token")
@click.argument("email")
@click.option("--cluster-url", required=True, envvar="BURLA_GCP_CLUSTER_URL", help="The cluster service's URL.")
@click.option("--days", type=click.FloatRange(min=0.001, max=366), default=30, show_default=True,
              help="How long the token lasts.")
def issue_token(email: str, cluster_url: str, days: float) -> None:
    """Issue a burla user token for EMAIL (for administrators: your Google credentials must be
    able to read the cluster secret). Prints the token; give it to the user as BURLA_GCP_TOKEN.

    \b
    Example:
        burla gcp issue-token alice@example.com --cluster-url https://burla-cluster-xyz.a.run.app
    """
    import json
    import urllib.error
    import urllib.request

    from burla_backend_gcp import clients

    credentials = clients.default_credentials()
    import google.auth.transport.requests

    credentials.refresh(google.auth.transport.requests.Request())
    request = urllib.request.Request(
        cluster_url.rstrip("/") + "/v1/tokens", method="POST",
        data=json.dumps({"email": email, "expires_in_s": days * 86400}).encode(),
        headers={"Authorization": f"Bearer {credentials.token}", "X-Burla-Credential": "google",
                 "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=60) as answer:
            click.echo(json.loads(answer.read())["token"])
    except urllib.error.HTTPError as error:
        try:
            message = json.loads(error.read()).get("message", "")
        except ValueError:
            message = ""
        raise click.ClickException(f"the cluster refused (HTTP {error.code}): {message}") from None
    except OSError as error:
        raise click.ClickException(f"cannot reach the cluster at {cluster_url}: {error}") from None
