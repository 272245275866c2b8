"""Steps: the cluster's two service accounts, and the roles they get — only those they need.

    burla-cluster@  the cluster service (Cloud Run): creates and deletes the node VMs (running as
                    burla-node@), keeps the node firewall rule's source ranges, reads and writes
                    Firestore, reads the node token and the CA certificate, uses the bucket.
    burla-node@     each node VM: reads the node secrets, writes its node document and heartbeat,
                    uses the bucket, and deletes its own VM when idle or when its agent cannot start.

Which roles: burla_backend_gcp.schema's tables (SERVICE_ROLES, NODE_ROLES, *_SECRETS), so what the
cluster may do is read in one place. Two are narrowed here: Cloud Storage roles are granted on
the cluster's bucket only, not the project, and each secret is granted one by one (the cluster
secret to nobody: whoever may read it is an administrator). The installer's own roles are never
granted to either account.

Project-level roles are added to the project's policy by read-modify-write with its etag (a
concurrent change is retried, never overwritten); nothing already in a policy is removed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .. import schema
from .steps import CREATE, NONE, Change, Step

if TYPE_CHECKING:
    from google.iam.v1 import policy_pb2

    from .context import InstallContext
    from .names import ClusterNames

CLUSTER_ACCOUNT_ID = schema.SERVICE_ACCOUNT_ID
NODE_ACCOUNT_ID = schema.NODE_SERVICE_ACCOUNT_ID
ACCOUNTS = (
    (CLUSTER_ACCOUNT_ID, "Burla cluster service", "The Burla cluster service: creates and deletes the node VMs."),
    (NODE_ACCOUNT_ID, "Burla node", "The identity of Burla's node VMs."),
)


def _on_bucket(role: str) -> bool:
    return role.startswith("roles/storage.")


ROLES = {CLUSTER_ACCOUNT_ID: schema.SERVICE_ROLES, NODE_ACCOUNT_ID: schema.NODE_ROLES}
PROJECT_ROLES: dict[str, tuple[str, ...]] = {a: tuple(r for r in roles if not _on_bucket(r)) for a, roles in ROLES.items()}
BUCKET_ROLES: dict[str, tuple[str, ...]] = {a: tuple(r for r in roles if _on_bucket(r)) for a, roles in ROLES.items()}
SECRET_ROLE = "roles/secretmanager.secretAccessor"
SECRET_READERS: dict[str, tuple[str, ...]] = {CLUSTER_ACCOUNT_ID: schema.SERVICE_SECRETS,
                                               NODE_ACCOUNT_ID: schema.NODE_SECRETS}
# The service starts VMs that run as the node account: it must be allowed to act as it.
ACT_AS_ROLE = "roles/iam.serviceAccountUser"


def readers_of(names: "ClusterNames", secret_id: str) -> dict[str, set[str]]:
    """The (role → members) a secret's own policy must hold."""
    members = {member(names, account) for account, secrets in SECRET_READERS.items() if secret_id in secrets}
    return {SECRET_ROLE: members} if members else {}


def bucket_wanted(names: "ClusterNames") -> dict[str, set[str]]:
    wanted: dict[str, set[str]] = {}
    for account, roles in BUCKET_ROLES.items():
        for role in roles:
            wanted.setdefault(role, set()).add(member(names, account))
    return wanted


POLICY_RETRIES = 5


def member(names: "ClusterNames", account_id: str) -> str:
    return f"serviceAccount:{account_id}@{names.project}.iam.gserviceaccount.com"


def missing_bindings(policy: "policy_pb2.Policy", wanted: dict[str, set[str]]) -> dict[str, set[str]]:
    """The (role → members) of `wanted` that `policy` does not hold yet."""
    held: dict[str, set[str]] = {}
    for binding in policy.bindings:
        if not binding.HasField("condition"):
            held.setdefault(binding.role, set()).update(binding.members)
    missing = {role: members - held.get(role, set()) for role, members in wanted.items()}
    return {role: members for role, members in missing.items() if members}


def add_bindings(policy: "policy_pb2.Policy", additions: dict[str, set[str]]) -> None:
    for role, members in additions.items():
        for binding in policy.bindings:
            if binding.role == role and not binding.HasField("condition"):
                binding.members.extend(sorted(members - set(binding.members)))
                break
        else:
            policy.bindings.add(role=role, members=sorted(members))


def describe(additions: dict[str, set[str]]) -> str:
    pairs = [f"{role.removeprefix('roles/')} to {m.split(':', 1)[1].split('@', 1)[0]}"
             for role, members in sorted(additions.items()) for m in sorted(members)]
    return ", ".join(pairs)


def update_policy(read, write, wanted: dict[str, set[str]]) -> dict[str, set[str]]:
    """Read-modify-write a policy until it holds `wanted` (a stale etag is retried); what was added."""
    from google.api_core import exceptions

    added: dict[str, set[str]] = {}
    for attempt in range(POLICY_RETRIES):
        policy = read()
        missing = missing_bindings(policy, wanted)
        if not missing:
            return added
        add_bindings(policy, missing)
        try:
            write(policy)
        except (exceptions.Aborted, exceptions.Conflict):
            if attempt == POLICY_RETRIES - 1:
                raise
            continue
        for role, members in missing.items():
            added.setdefault(role, set()).update(members)
    return added


class ServiceAccounts(Step):
    label = "service accounts"

    def plan(self, ctx: "InstallContext") -> Change:
        from google.api_core import exceptions

        missing = []
        for account_id, _, _ in ACCOUNTS:
            try:
                ctx.iam().get_service_account(ctx.project, f"{account_id}@{ctx.project}.iam.gserviceaccount.com")
            except exceptions.NotFound:
                missing.append(account_id)
        everyone = ", ".join(a for a, _, _ in ACCOUNTS)
        if not missing:
            return Change(NONE, everyone)
        return Change(CREATE, ", ".join(missing), missing)

    def apply(self, ctx: "InstallContext", change: Change) -> str:
        from google.api_core import exceptions

        for account_id, display, description in ACCOUNTS:
            if account_id in change.found:
                try:
                    ctx.iam().create_service_account(ctx.project, account_id, display, description)
                except exceptions.Conflict:
                    pass  # made by an interrupted run an instant ago
        return ", ".join(change.found)


def _project_wanted(names: "ClusterNames") -> dict[str, set[str]]:
    wanted: dict[str, set[str]] = {}
    for account_id, roles in PROJECT_ROLES.items():
        for role in roles:
            wanted.setdefault(role, set()).add(member(names, account_id))
    return wanted


class ProjectRoles(Step):
    label = "cluster roles"

    def _read(self, ctx: "InstallContext"):
        return ctx.resource_manager().get_iam_policy(
            request={"resource": f"projects/{ctx.project}", "options": {"requested_policy_version": 3}})

    def _node_policy(self, ctx: "InstallContext"):
        return ctx.iam().get_iam_policy(ctx.project, ctx.names.node_account)

    def plan(self, ctx: "InstallContext") -> Change:
        from google.api_core import exceptions

        missing = missing_bindings(self._read(ctx), _project_wanted(ctx.names))
        act_as = {ACT_AS_ROLE: {member(ctx.names, CLUSTER_ACCOUNT_ID)}}
        try:
            missing_act_as = missing_bindings(self._node_policy(ctx), act_as)
        except exceptions.NotFound:
            missing_act_as = act_as  # the account is created by the step before, which a dry run skips
        if not missing and not missing_act_as:
            count = sum(len(r) for r in PROJECT_ROLES.values()) + 1
            return Change(NONE, f"{count} roles held")
        detail = describe(missing)
        if missing_act_as:
            detail = (detail + ", " if detail else "") + f"act as {NODE_ACCOUNT_ID} to {CLUSTER_ACCOUNT_ID}"
        return Change("grant", detail)

    def apply(self, ctx: "InstallContext", change: Change) -> str:
        rm = ctx.resource_manager()
        update_policy(lambda: self._read(ctx),
                      lambda policy: rm.set_iam_policy(request={"resource": f"projects/{ctx.project}", "policy": policy}),
                      _project_wanted(ctx.names))
        update_policy(lambda: self._node_policy(ctx),
                      lambda policy: ctx.iam().set_iam_policy(ctx.project, ctx.names.node_account, policy),
                      {ACT_AS_ROLE: {member(ctx.names, CLUSTER_ACCOUNT_ID)}})
        return change.detail
