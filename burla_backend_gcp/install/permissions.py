"""What the installer's own account must hold, checked before anything changes.

`check(...)` asks Resource Manager's `testIamPermissions` for every permission install (or
uninstall) uses; if any is missing it raises `InstallPermissionsMissing`, whose message names
each one and the three ways to get them: a basic role, a set of predefined roles, or a custom
"installer" role holding exactly these permissions (`burla install --print-role` prints its
YAML, for `gcloud iam roles create --file`).

These are the installer's permissions: none of them is ever granted to the cluster, whose
service accounts get only the roles in accounts.py.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..errors import InstallPermissionsMissing

if TYPE_CHECKING:
    from .context import InstallContext

# Each step's calls, and the permission each needs (Google's IAM reference names them).
INSTALL_PERMISSIONS: dict[str, tuple[str, ...]] = {
    "project": ("resourcemanager.projects.get", "resourcemanager.projects.getIamPolicy",
                "resourcemanager.projects.setIamPolicy"),
    "APIs": ("serviceusage.services.list", "serviceusage.services.enable", "serviceusage.operations.get"),
    "service accounts": ("iam.serviceAccounts.create", "iam.serviceAccounts.get", "iam.serviceAccounts.getIamPolicy",
                         "iam.serviceAccounts.setIamPolicy", "iam.serviceAccounts.actAs"),
    # Creating a VPC firewall rule also needs updatePolicy on the network it applies to.
    "firewall rule": ("compute.firewalls.create", "compute.firewalls.get", "compute.firewalls.update",
                      "compute.networks.updatePolicy", "compute.globalOperations.get"),
    "bucket": ("storage.buckets.create", "storage.buckets.get", "storage.buckets.getIamPolicy",
               "storage.buckets.setIamPolicy", "storage.objects.create", "storage.objects.get"),
    "secrets": ("secretmanager.secrets.create", "secretmanager.secrets.get", "secretmanager.secrets.getIamPolicy",
                "secretmanager.secrets.setIamPolicy", "secretmanager.versions.add", "secretmanager.versions.list"),
    "Firestore": ("datastore.databases.create", "datastore.databases.get", "datastore.entities.create",
                  "datastore.entities.get", "datastore.entities.update"),
    "Cloud Run": ("run.services.create", "run.services.get", "run.services.update", "run.services.getIamPolicy",
                  "run.services.setIamPolicy", "run.operations.get"),
}

UNINSTALL_PERMISSIONS: dict[str, tuple[str, ...]] = {
    "project": ("resourcemanager.projects.get", "resourcemanager.projects.getIamPolicy",
                "resourcemanager.projects.setIamPolicy"),
    "VMs": ("compute.instances.list", "compute.instances.delete", "compute.zoneOperations.get"),
    "Cloud Run": ("run.services.get", "run.services.delete"),
    "Firestore": ("datastore.databases.get", "datastore.databases.delete"),
    "secrets": ("secretmanager.secrets.get", "secretmanager.secrets.delete"),
    "bucket": ("storage.buckets.get", "storage.buckets.delete", "storage.objects.list", "storage.objects.delete"),
    "service accounts": ("iam.serviceAccounts.get", "iam.serviceAccounts.delete"),
    "firewall rule": ("compute.firewalls.get", "compute.firewalls.delete", "compute.networks.updatePolicy",
                      "compute.globalOperations.get"),
}


def _flatten(table: dict[str, tuple[str, ...]]) -> tuple[str, ...]:
    return tuple(sorted({p for permissions in table.values() for p in permissions}))


INSTALL = _flatten(INSTALL_PERMISSIONS)
UNINSTALL = _flatten(UNINSTALL_PERMISSIONS)

# Predefined roles that together hold every permission above. Editor alone does not: Google's
# basic Editor role cannot change IAM policies, and install must, to give the cluster its roles.
INSTALLER_ROLES: tuple[tuple[str, str], ...] = (
    ("roles/serviceusage.serviceUsageAdmin", "Service Usage Admin"),
    ("roles/run.admin", "Cloud Run Admin"),
    ("roles/compute.securityAdmin", "Compute Security Admin"),
    ("roles/compute.instanceAdmin.v1", "Compute Instance Admin (v1)"),
    ("roles/storage.admin", "Storage Admin"),
    ("roles/secretmanager.admin", "Secret Manager Admin"),
    ("roles/iam.serviceAccountAdmin", "Service Account Admin"),
    ("roles/iam.serviceAccountUser", "Service Account User"),
    ("roles/resourcemanager.projectIamAdmin", "Project IAM Admin"),
    ("roles/datastore.owner", "Cloud Datastore Owner"),
)
ROLE_ID = "burlaInstaller"


def role_yaml() -> str:
    """The custom installer role, as `gcloud iam roles create ROLE_ID --file` reads it: every
    permission install and uninstall use, and nothing else."""
    lines = ["title: Burla installer",
             "description: What `burla install` and `burla uninstall` need, and nothing more.",
             "stage: GA", "includedPermissions:"]
    lines += [f"- {permission}" for permission in sorted(set(INSTALL) | set(UNINSTALL))]
    return "\n".join(lines) + "\n"


def missing_permissions(ctx: "InstallContext", permissions: tuple[str, ...]) -> list[str]:
    """The permissions the installer's account lacks on the project (testIamPermissions answers
    the subset it holds; it takes at most 100 a call)."""
    client = ctx.resource_manager()
    held: set[str] = set()
    wanted = list(permissions)
    for start in range(0, len(wanted), 100):
        answer = client.test_iam_permissions(resource=f"projects/{ctx.project}", permissions=wanted[start:start + 100])
        held.update(answer.permissions)
    return [p for p in wanted if p not in held]


def check(ctx: "InstallContext", *, uninstall: bool = False) -> int:
    """Raise InstallPermissionsMissing naming each missing permission; the number checked."""
    permissions = UNINSTALL if uninstall else INSTALL
    missing = missing_permissions(ctx, permissions)
    if missing:
        raise InstallPermissionsMissing(ctx.project, ctx.account, missing, uninstall=uninstall,
                                        message=explain(ctx.project, ctx.account, missing, uninstall))
    return len(permissions)


def explain(project: str, account: str, missing: list[str], uninstall: bool = False) -> str:
    command = "uninstall" if uninstall else "install"
    who = account or "your account"
    member = f"user:{account}" if account and "@" in account and not account.endswith("gserviceaccount.com") else (
        f"serviceAccount:{account}" if account else "user:YOU@example.com")
    roles = ", ".join(title for _, title in INSTALLER_ROLES)
    lines = [
        f"{who} lacks {len(missing)} permission{'s' if len(missing) != 1 else ''} that `burla {command}` needs "
        f"on project {project}; nothing was changed:",
        *(f"  - {permission}" for permission in missing),
        "Any one of these grants them (a project owner can run the command):",
        f"  1. the basic Owner role (Editor is not enough: it cannot set IAM policies):",
        f"     gcloud projects add-iam-policy-binding {project} --member={member} --role=roles/owner",
        f"  2. these predefined roles together: {roles}",
        f"     ({', '.join(role for role, _ in INSTALLER_ROLES)});",
        f"  3. a custom role with exactly the permissions burla needs:",
        f"     burla install --print-role > burla-installer.yaml",
        f"     gcloud iam roles create {ROLE_ID} --project={project} --file=burla-installer.yaml",
        f"     gcloud projects add-iam-policy-binding {project} --member={member} "
        f"--role=projects/{project}/roles/{ROLE_ID}",
        f"Then run `burla {command}` again.",
    ]
    return "\n".join(lines)
