"""Whom and where `burla install` works for: the gcloud CLI's current project, the user's
application-default credentials, the region, and the Google clients (all from clients.py).

Each missing prerequisite is an InstallPrerequisiteMissing whose message is the command that
fixes it: gcloud not installed, no project set, no application-default login.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable

from .. import clients
from ..errors import GcpCredentialsMissing, InstallPrerequisiteMissing
from .names import DEFAULT_REGION, ClusterNames

if TYPE_CHECKING:
    from google.auth.credentials import Credentials

GCLOUD_INSTALL_URL = "https://cloud.google.com/sdk/docs/install"
_GCLOUD_TIMEOUT_S = 60.0


def _gcloud(*args: str) -> str:
    """`gcloud ARGS`'s stdout, stripped; InstallPrerequisiteMissing if gcloud is not installed."""
    executable = shutil.which("gcloud")
    if executable is None:
        raise InstallPrerequisiteMissing(
            f"gcloud (the Google Cloud CLI) is not installed or not on PATH: install it ({GCLOUD_INSTALL_URL}), "
            f"then run `gcloud init` and `gcloud auth application-default login`.")
    # gcloud runs its own Python: this one's module path would break it.
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    try:
        done = subprocess.run([executable, *args], capture_output=True, text=True, timeout=_GCLOUD_TIMEOUT_S,
                              stdin=subprocess.DEVNULL, env=env)
    except subprocess.TimeoutExpired:
        raise InstallPrerequisiteMissing(f"`gcloud {' '.join(args)}` did not answer within {_GCLOUD_TIMEOUT_S:g} s; "
                                         f"check that `gcloud` works in this shell.") from None
    if done.returncode != 0:
        raise InstallPrerequisiteMissing(f"`gcloud {' '.join(args)}` failed (exit status {done.returncode}): "
                                         f"{done.stderr.strip() or done.stdout.strip()}")
    return done.stdout.strip()


def gcloud_project(explicit: str | None = None) -> str:
    """The project to install into: `explicit` (--project), else `gcloud config get project`."""
    if explicit:
        return explicit
    project = _gcloud("config", "get", "project")
    if not project or project == "(unset)":
        raise InstallPrerequisiteMissing(
            "No Google Cloud project is set in gcloud: run `gcloud config set project PROJECT_ID` "
            "(`gcloud projects list` shows yours), or pass --project PROJECT_ID.")
    return project


def user_credentials() -> "Credentials":
    """The user's application-default credentials (or, against the GCP stand-in, its metadata
    server's)."""
    try:
        return clients.default_credentials()
    except GcpCredentialsMissing:
        raise InstallPrerequisiteMissing(
            "You are not logged in to Google Cloud with application-default credentials: run "
            "`gcloud auth application-default login` (and `gcloud auth login` if gcloud itself asks).") from None


def account_of(credentials: "Credentials") -> str:
    """The email the credentials act as, where they say (service accounts, metadata servers);
    else gcloud's account; "" if neither knows."""
    email = getattr(credentials, "service_account_email", None)
    if email and email != "default":
        return email
    try:
        account = _gcloud("config", "get", "account")
    except InstallPrerequisiteMissing:
        return ""
    return "" if account == "(unset)" else account


@dataclass
class InstallContext:
    """One install or uninstall run: the project, its resource names, who acts, and the clients."""

    project: str
    credentials: "Credentials"
    region: str = DEFAULT_REGION
    endpoint: str | None = None  # the GCP stand-in's URL, or None for Google
    dry_run: bool = False
    allow_from: tuple[str, ...] = ()  # extra source ranges for the node firewall rule
    echo: Callable[[str], None] = print
    _clients: dict[str, Any] = field(default_factory=dict, repr=False)
    _account: str | None = field(default=None, repr=False)

    @property
    def names(self) -> ClusterNames:
        return ClusterNames(self.project, self.region)

    @property
    def account(self) -> str:
        if self._account is None:
            self._account = account_of(self.credentials)
        return self._account

    def _client(self, name: str, make: Callable[[], Any]) -> Any:
        if name not in self._clients:
            self._clients[name] = make()
        return self._clients[name]

    def _args(self) -> dict[str, Any]:
        return {"endpoint": self.endpoint, "credentials": self.credentials}

    def resource_manager(self):
        return self._client("resource_manager", lambda: clients.resource_manager(**self._args()))

    def service_usage(self):
        return self._client("service_usage", lambda: clients.service_usage(**self._args()))

    def iam(self) -> clients.IamRest:
        return self._client("iam", lambda: clients.iam(**self._args()))

    def firewalls(self):
        return self._client("firewalls", lambda: clients.firewalls(**self._args()))

    def global_operations(self):
        return self._client("global_operations", lambda: clients.global_operations(**self._args()))

    def instances(self):
        return self._client("instances", lambda: clients.instances(**self._args()))

    def zone_operations(self):
        return self._client("zone_operations", lambda: clients.zone_operations(**self._args()))

    def storage(self):
        return self._client("storage", lambda: clients.storage(self.project, **self._args()))

    def secret_manager(self):
        return self._client("secret_manager", lambda: clients.secret_manager(**self._args()))

    def firestore_admin(self):
        return self._client("firestore_admin", lambda: clients.firestore_admin(**self._args()))

    def firestore(self):
        from .. import schema

        return self._client("firestore", lambda: clients.firestore(self.project, schema.DATABASE, **self._args()))

    def run_services(self):
        return self._client("run_services", lambda: clients.run_services(**self._args()))


def make_context(*, project: str | None = None, region: str | None = None, dry_run: bool = False,
                 allow_from: tuple[str, ...] = (), echo: Callable[[str], None] = print,
                 endpoint: str | None = None, credentials: "Credentials | None" = None,
                 account: str | None = None) -> InstallContext:
    """The context of a run from the user's environment: gcloud's project, the user's
    application-default credentials (and their email, for messages and the first admin), and the
    stand-in when $BURLA_GCP_STANDIN names one."""
    chosen = gcloud_project(project)
    creds = credentials or user_credentials()
    return InstallContext(project=chosen, credentials=creds, region=region or DEFAULT_REGION,
                          endpoint=clients.standin_endpoint(endpoint), dry_run=dry_run, allow_from=allow_from,
                          echo=echo, _account=account)
