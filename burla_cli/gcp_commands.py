"""`burla gcp`: commands about backend "gcp" that need no Google account; today `simulate`, which
runs the GCP stand-in (burla_backend_gcp.standin) in the foreground."""

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
    """Backend "gcp" tools that run on this machine only, with no Google account.

    \b
    Example:
        burla gcp simulate            # Google Cloud's APIs on 127.0.0.1, until Ctrl-C
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
