"""`burla install` and `burla uninstall`: a Burla cluster in the user's own Google Cloud project.

    permissions.check ─► apis ─► accounts ─► firewall ─► bucket ─► secrets ─► database
      (testIamPermissions: nothing changes if one is missing)         ─► service (Cloud Run)

Each step (steps.py) looks first and changes only what is missing, printing one line, so a
second install changes nothing (or rolls the service out to a new version) and an interrupted
one can be run again. `dry_run=True` prints what would change and changes nothing. uninstall.py
removes what install made, VMs first. Every Google call goes through clients.py.
"""

from __future__ import annotations

from dataclasses import dataclass

from . import permissions
from .accounts import ProjectRoles, ServiceAccounts
from .apis import EnableApis
from .bucket import Bucket
from .context import InstallContext, make_context
from .database import ConfigDocument, Database, FirstAdmin
from .firewall import NodeFirewall
from .secrets import Secrets
from .service import SERVICE_IMAGE, CloudRunService, PublicAccess, ServiceCode, cluster_url
from .steps import Run, run_steps

__all__ = ["InstallContext", "InstallResult", "install", "make_context", "permissions"]


@dataclass
class InstallResult:
    run: Run
    cluster_url: str | None  # None after a dry run that would deploy it


def install_steps(image: str = SERVICE_IMAGE) -> list:
    code = ServiceCode()
    return [EnableApis(), ServiceAccounts(), ProjectRoles(), NodeFirewall(), Bucket(), Secrets(), Database(),
            ConfigDocument(), FirstAdmin(), code, CloudRunService(code, image), PublicAccess()]


def install(ctx: InstallContext, *, image: str = SERVICE_IMAGE) -> InstallResult:
    """Check the installer's permissions, then run every step (see the module's picture)."""
    checked = permissions.check(ctx)
    ctx.echo(f"  {'ok':<14}permissions: all {checked} that install needs")
    run = run_steps(ctx, install_steps(image))
    url = None
    if not ctx.dry_run:
        url = cluster_url(ctx)
    else:
        from google.api_core import exceptions

        try:
            url = cluster_url(ctx)
        except (exceptions.NotFound, exceptions.Forbidden):
            url = None
    return InstallResult(run, url)
