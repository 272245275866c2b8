"""`burla install` and `burla login`: commands of the gcp backend, which ships separately.

They are always listed (so `--help` documents them) and hand over to `burla_backend_gcp.cli`'s
`install()` / `login()` when that package is installed; until then they say so and fail.
"""

from __future__ import annotations

import importlib

import click

NOT_INSTALLED = (
    "`burla {name}` belongs to the gcp backend (burla_backend_gcp), which is not installed yet. "
    "{what} Until it is available, remote_parallel_map runs on this machine with the \"local\" "
    "backend, which needs no account and no setup."
)


def _run_gcp_command(name: str, what: str) -> None:
    try:
        module = importlib.import_module("burla_backend_gcp.cli")
    except ModuleNotFoundError as error:
        if error.name and error.name.split(".")[0] == "burla_backend_gcp":
            raise click.ClickException(NOT_INSTALLED.format(name=name, what=what)) from None
        raise
    command = getattr(module, name, None)
    if not callable(command):
        raise click.ClickException(NOT_INSTALLED.format(name=name, what=what))
    command()


@click.command()
def install() -> None:
    """Deploy a self-hosted Burla cluster into your Google Cloud project.

    Installs into the project the gcloud CLI points at (`gcloud config get project`).
    Running it again updates an existing install to the current version.

    \b
    What it creates:
      - enables the Google Cloud APIs Burla uses;
      - a firewall rule for the cluster's nodes;
      - a Cloud Storage bucket;
      - a Secret Manager secret holding the cluster token;
      - a service account for the cluster with only the permissions it needs;
      - the Firestore database with its initial config document;
      - the cluster's web service (dashboard and API) on Cloud Run.

    Prerequisites: gcloud installed and logged in, both as a user (`gcloud auth login`) and
    with application-default credentials (`gcloud auth application-default login`), with an
    account holding one of these permission sets (if one is missing, install names it):

    \b
      1. roles/editor;
      2. Service Usage Admin, Cloud Run Admin, Compute Network Admin, Secret Manager Admin,
         Service Account Admin, Service Account Key Admin, Project IAM Admin and
         Firestore/Datastore Owner;
      3. exactly the permissions listed under `burla install` in docs/cli.md (a custom
         "installer" role can be created from them).

    These permissions are the installer's; they are never granted to the cluster.

    \b
    Example:
      gcloud config set project my-project
      burla install

    Needs the gcp backend (burla_backend_gcp), which is not installed yet.
    """
    _run_gcp_command(
        "install",
        "Once installed, `burla install` deploys a self-hosted cluster (firewall rule, bucket, token "
        "secret, service account, Firestore database, Cloud Run service) into the Google Cloud project "
        "that `gcloud config get project` names.",
    )


@click.command()
def login() -> None:
    """Connect this computer to your Burla cluster and authorize it to run jobs there.

    Opens the "Authorize this machine" page of the dashboard you last logged into, in your
    default browser. Pressing "Authorize" creates a token for this computer and sends it
    here; it is saved in burla_credentials.json in this system's user data directory, and
    remote_parallel_map then runs on that cluster. With no dashboard session in the browser,
    login fails and asks you to log into the dashboard first. Run it again (or let the token
    age past its lifetime) to refresh the token.

    \b
    Example:
      burla login

    Needs the gcp backend (burla_backend_gcp), which is not installed yet.
    """
    _run_gcp_command(
        "login",
        "Once installed, `burla login` opens your cluster dashboard's \"Authorize this machine\" page and "
        "saves the token it sends in burla_credentials.json in your user data directory.",
    )
