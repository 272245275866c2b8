"""`burla install`, `burla uninstall`, `burla dashboard` and `burla login`: a cluster in your own
Google Cloud project, and this computer's way in. Thin: the work is burla_backend_gcp.install
and burla_backend_gcp.login; this module parses options and prints."""

from __future__ import annotations

import ipaddress

import click

from .params import FiniteFloat

GCP_EXTRA_MISSING = ("`burla {name}` needs the Google Cloud client libraries: pip install 'burla-open[gcp]' "
                     "({error})")


def _gcp_module(name: str, command: str):
    """burla_backend_gcp.NAME, or a plain error naming the extra to install."""
    import importlib

    try:
        return importlib.import_module(f"burla_backend_gcp.{name}")
    except ImportError as error:
        if (error.name or "").split(".")[0] in ("google", "cryptography", "google_crc32c"):
            raise click.ClickException(GCP_EXTRA_MISSING.format(name=command, error=error)) from None
        raise


def _cidr(ctx: click.Context, param: click.Parameter, values: tuple[str, ...]) -> tuple[str, ...]:
    ranges = []
    for value in values:
        try:
            ranges.append(str(ipaddress.ip_network(value, strict=False)))
        except ValueError:
            raise click.BadParameter(f"{value!r} is not an address range such as 203.0.113.7/32") from None
    return tuple(ranges)


@click.command()
@click.option("--project", metavar="PROJECT_ID", help="Install into this project instead of gcloud's current one.")
@click.option("--region", metavar="REGION", default=None,
              help="Region of the service, the bucket, the database and the nodes [default: us-central1].")
@click.option("--dry-run", is_flag=True, help="List what would change, and change nothing.")
@click.option("--allow-from", "allow_from", multiple=True, metavar="CIDR", callback=_cidr,
              help="Also admit this address range to the nodes' port (repeatable).")
@click.option("--print-role", is_flag=True,
              help="Print the YAML of a custom role holding exactly the permissions install and uninstall use, "
                   "and exit.")
def install(project: str | None, region: str | None, dry_run: bool, allow_from: tuple[str, ...],
            print_role: bool) -> None:
    """Deploy a self-hosted Burla cluster into your Google Cloud project.

    Installs into the project the gcloud CLI points at (`gcloud config get project`), as you,
    with your application-default credentials. It first checks that you hold every permission
    it needs, and changes nothing if one is missing (it names each missing permission and how
    to get it). Then it creates what is missing, printing one line per step:

    \b
      - enables the Google Cloud APIs the cluster uses;
      - two service accounts, burla-cluster (the service) and burla-node (the VMs), with only
        the roles they need;
      - a firewall rule for the nodes' port, never open to the whole internet;
      - a private Cloud Storage bucket, and the service's code in it;
      - secrets: the node token, the cluster CA, the cluster secret (admins read it);
      - the Firestore database `burla` with the cluster's config, you as its first admin;
      - the cluster service (API and dashboard) on Cloud Run.

    Running it again changes nothing, or updates the service to this version of burla; an
    interrupted run can be run again. While no node runs it costs a few cents a month (see
    docs/install.md).

    Prerequisites: gcloud installed, `gcloud auth application-default login`, and one of: the
    Owner role; the predefined roles install lists when one is missing; or a custom role made
    from `burla install --print-role`.

    \b
    Examples:
      gcloud config set project my-project
      burla install --dry-run
      burla install
      burla install --print-role > burla-installer.yaml
    """
    from burla_backend_gcp.install import permissions

    if print_role:
        click.echo(permissions.role_yaml(), nl=False)
        return
    install_module = _gcp_module("install", "install")
    ctx = install_module.make_context(project=project, region=region, dry_run=dry_run, allow_from=allow_from,
                                      echo=click.echo)
    click.echo(f"burla install{' --dry-run' if dry_run else ''}: project {ctx.project}, region {ctx.region}")
    result = install_module.install(ctx)
    if dry_run:
        verdict = "nothing would change" if not result.run.changed else "nothing was changed (dry run)"
        click.echo(f"Dry run: {verdict}.")
        return
    click.echo(f"The cluster's dashboard: {result.cluster_url}")
    click.echo("Next: `burla dashboard` signs you in; `burla login` connects this computer.")


@click.command()
@click.option("--project", metavar="PROJECT_ID", help="Uninstall from this project instead of gcloud's current one.")
@click.option("--region", metavar="REGION", default=None, help="The region install used [default: us-central1].")
@click.option("--yes", "-y", is_flag=True, help="Do not ask before deleting.")
def uninstall(project: str | None, region: str | None, yes: bool) -> None:
    """Remove the Burla cluster from your Google Cloud project.

    Lists what it would delete, asks (unless --yes), then deletes: the cluster service, every
    VM of the cluster, the Firestore database (config, jobs, tokens), the secrets, the bucket
    with everything in it, the service accounts and their roles, and the firewall rule. Nothing
    billable is left; the APIs stay enabled (that costs nothing).

    \b
    Examples:
      burla uninstall
      burla uninstall --yes
    """
    install_module = _gcp_module("install", "uninstall")
    from burla_backend_gcp.install.uninstall import uninstall as run_uninstall

    ctx = install_module.make_context(project=project, region=region, dry_run=True, echo=click.echo)
    click.echo(f"burla uninstall: project {ctx.project}, region {ctx.region}")
    preview = run_uninstall(ctx)
    if not preview.changed:
        click.echo("There is no Burla cluster here: nothing to remove.")
        return
    if not yes:
        click.confirm(f"Delete all of this from project {ctx.project}? Jobs, results and tokens are lost",
                      abort=True)
    ctx.dry_run = False
    run_uninstall(ctx)
    click.echo(f"Burla is uninstalled from {ctx.project}.")


@click.command()
@click.option("--cluster-url", metavar="URL", help="The cluster's address (default: your credentials file's, "
                                                   "else the Cloud Run service of gcloud's project).")
@click.option("--no-browser", is_flag=True, help="Print the sign-in link instead of opening a browser.")
def dashboard(cluster_url: str | None, no_browser: bool) -> None:
    """Sign in to your cluster's dashboard in the browser.

    Proves you may: your Google credentials can read the cluster secret (project owners and
    admins), or this computer holds a burla token from `burla login`. Then opens a one-time
    sign-in link (valid for 2 minutes) that gives the browser a session.

    \b
    Examples:
      burla dashboard
      burla dashboard --no-browser      # print the link, e.g. over SSH
    """
    login_module = _gcp_module("login", "dashboard")
    login_module.open_dashboard(cluster_url=cluster_url, open_browser=not no_browser, echo=click.echo)


@click.command()
@click.option("--cluster-url", metavar="URL", help="The cluster's address (default: your credentials file's, "
                                                   "else the Cloud Run service of gcloud's project).")
@click.option("--no-browser", is_flag=True,
              help="No browser on this machine (SSH, notebooks): print a link to open anywhere and read the "
                   "code it shows.")
@click.option("--timeout", type=FiniteFloat(min=1), default=300.0, show_default=True, metavar="SECONDS",
              help="How long to wait for you to press Authorize.")
def login(cluster_url: str | None, no_browser: bool, timeout: float) -> None:
    """Connect this computer to your Burla cluster and authorize it to run jobs there.

    Opens the dashboard's "Authorize this machine" page in your browser. Pressing "Authorize"
    creates a token for this computer and hands it to this command, which saves it in
    burla_credentials.json (readable by you only) in this system's user data directory and
    makes "gcp" your default backend: remote_parallel_map then runs on the cluster. Without a
    dashboard session in the browser, the page (and this command) say to run `burla
    dashboard` first. Run it again to refresh the token; it also refreshes itself before it
    expires.

    \b
    Examples:
      burla login
      burla login --no-browser          # over SSH or in a notebook: paste the code it shows
    """
    login_module = _gcp_module("login", "login")
    login_module.login(cluster_url=cluster_url, open_browser=not no_browser, timeout_s=timeout, echo=click.echo,
                       prompt=lambda text: click.prompt(text, hide_input=False))
