"""`burla uninstall`: remove everything install made, so nothing billable is left.

    the Cloud Run service (first: it makes VMs) ─► every VM of the cluster (label burla-cluster or
    tag burla-cluster-node, in every zone) ─► the Firestore database ─► the secrets ─► the bucket
    and its objects ─► the accounts' project roles ─► the service accounts ─► the firewall rule

The APIs stay enabled: an enabled API costs nothing, and other things in the project may use
them. Every step is idempotent, like install's: what is already gone is "unchanged".
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .. import clients, schema
from .accounts import ACCOUNTS, member
from .names import ALL_SECRETS
from .steps import DELETE, NONE, Change, Run, Step, run_steps

if TYPE_CHECKING:
    from .context import InstallContext

DELETE_TIMEOUT_S = 600.0


class RemoveService(Step):
    label = "Cloud Run service"

    def plan(self, ctx: "InstallContext") -> Change:
        from google.api_core import exceptions

        try:
            ctx.run_services().get_service(name=ctx.names.service)
        except exceptions.NotFound:
            return Change(NONE, "none")
        return Change(DELETE, schema.SERVICE_NAME)

    def apply(self, ctx: "InstallContext", change: Change) -> str:
        from google.api_core import exceptions

        try:
            ctx.run_services().delete_service(name=ctx.names.service).result(timeout=DELETE_TIMEOUT_S)
        except exceptions.NotFound:
            pass
        return change.detail


def cluster_vms(ctx: "InstallContext") -> list[tuple[str, str]]:
    """(zone, name) of every VM the cluster made, in every zone of the project."""
    found = []
    for zone_path, scoped in ctx.instances().aggregated_list(request={"project": ctx.project}):
        for instance in scoped.instances:
            if schema.NODE_LABEL in instance.labels or schema.NODE_TAG in instance.tags.items:
                found.append((zone_path.rsplit("/", 1)[-1], instance.name))
    return sorted(found)


class RemoveVms(Step):
    label = "VMs"

    def plan(self, ctx: "InstallContext") -> Change:
        vms = cluster_vms(ctx)
        if not vms:
            return Change(NONE, "none")
        return Change(DELETE, f"{len(vms)}: {', '.join(name for _, name in vms)}", vms)

    def apply(self, ctx: "InstallContext", change: Change) -> str:
        from google.api_core import exceptions

        operations = []
        for zone, name in change.found:  # every delete first, then the waits: they run in parallel
            try:
                operations.append((zone, ctx.instances().delete(project=ctx.project, zone=zone, instance=name)))
            except exceptions.NotFound:
                pass
        for zone, operation in operations:
            clients.wait_zone_operation(operation, project=ctx.project, zone=zone, client=ctx.zone_operations(),
                                        timeout_s=DELETE_TIMEOUT_S)
        return change.detail


class RemoveDatabase(Step):
    label = "Firestore database"

    def plan(self, ctx: "InstallContext") -> Change:
        from google.api_core import exceptions

        try:
            ctx.firestore_admin().get_database(name=ctx.names.database)
        except exceptions.NotFound:
            return Change(NONE, "none")
        return Change(DELETE, f"{schema.DATABASE} (config, nodes, jobs, tokens)")

    def apply(self, ctx: "InstallContext", change: Change) -> str:
        ctx.firestore_admin().delete_database(name=ctx.names.database).result(timeout=DELETE_TIMEOUT_S)
        return change.detail


class RemoveEach(Step):
    """Removes each of a fixed set of resources that exists: `ids()`, `get` and `delete` one."""

    def ids(self) -> list[str]:
        raise NotImplementedError

    def get(self, ctx: "InstallContext", resource_id: str) -> None:
        raise NotImplementedError

    def delete(self, ctx: "InstallContext", resource_id: str) -> None:
        raise NotImplementedError

    def plan(self, ctx: "InstallContext") -> Change:
        from google.api_core import exceptions

        present = []
        for resource_id in self.ids():
            try:
                self.get(ctx, resource_id)
                present.append(resource_id)
            except exceptions.NotFound:
                pass
        if not present:
            return Change(NONE, "none")
        return Change(DELETE, ", ".join(present), present)

    def apply(self, ctx: "InstallContext", change: Change) -> str:
        from google.api_core import exceptions

        for resource_id in change.found:
            try:
                self.delete(ctx, resource_id)
            except exceptions.NotFound:
                pass
        return change.detail


class RemoveSecrets(RemoveEach):
    label = "secrets"

    def ids(self) -> list[str]:
        return list(ALL_SECRETS)

    def get(self, ctx: "InstallContext", resource_id: str) -> None:
        ctx.secret_manager().get_secret(name=ctx.names.secret(resource_id))

    def delete(self, ctx: "InstallContext", resource_id: str) -> None:
        ctx.secret_manager().delete_secret(name=ctx.names.secret(resource_id))


class RemoveBucket(Step):
    label = "bucket"

    def plan(self, ctx: "InstallContext") -> Change:
        from google.api_core import exceptions

        try:
            bucket = ctx.storage().get_bucket(ctx.names.bucket)
        except exceptions.NotFound:
            return Change(NONE, "none")
        count = sum(1 for _ in ctx.storage().list_blobs(bucket))
        return Change(DELETE, f"gs://{bucket.name} and its {count} object{'s' if count != 1 else ''}", bucket)

    def apply(self, ctx: "InstallContext", change: Change) -> str:
        from google.api_core import exceptions

        bucket = change.found
        for blob in list(ctx.storage().list_blobs(bucket)):
            try:
                blob.delete()
            except exceptions.NotFound:
                pass
        bucket.delete()
        return change.detail


def _ours(ctx: "InstallContext") -> set[str]:
    return {member(ctx.names, account_id) for account_id, _, _ in ACCOUNTS}


class RemoveProjectRoles(Step):
    label = "cluster roles"

    def _read(self, ctx: "InstallContext"):
        return ctx.resource_manager().get_iam_policy(
            request={"resource": f"projects/{ctx.project}", "options": {"requested_policy_version": 3}})

    def plan(self, ctx: "InstallContext") -> Change:
        ours = _ours(ctx)
        held = sorted({b.role for b in self._read(ctx).bindings if ours & set(b.members)})
        if not held:
            return Change(NONE, "none")
        return Change("remove", f"{len(held)} roles of the cluster's accounts")

    def apply(self, ctx: "InstallContext", change: Change) -> str:
        from google.api_core import exceptions

        ours = _ours(ctx)
        for attempt in range(5):
            policy = self._read(ctx)
            for binding in policy.bindings:
                kept = [m for m in binding.members if m not in ours]
                del binding.members[:]
                binding.members.extend(kept)
            kept_bindings = [b for b in policy.bindings if b.members]
            del policy.bindings[:]
            policy.bindings.extend(kept_bindings)
            try:
                ctx.resource_manager().set_iam_policy(request={"resource": f"projects/{ctx.project}", "policy": policy})
                break
            except (exceptions.Aborted, exceptions.Conflict):
                if attempt == 4:
                    raise
        return change.detail


class RemoveAccounts(RemoveEach):
    label = "service accounts"

    def ids(self) -> list[str]:
        return [account_id for account_id, _, _ in ACCOUNTS]

    def get(self, ctx: "InstallContext", resource_id: str) -> None:
        ctx.iam().get_service_account(ctx.project, ctx.names.account(resource_id))

    def delete(self, ctx: "InstallContext", resource_id: str) -> None:
        ctx.iam().delete_service_account(ctx.project, ctx.names.account(resource_id))


class RemoveFirewall(Step):
    label = "firewall rule"

    def plan(self, ctx: "InstallContext") -> Change:
        from google.api_core import exceptions

        try:
            ctx.firewalls().get(project=ctx.project, firewall=schema.FIREWALL_RULE)
        except exceptions.NotFound:
            return Change(NONE, "none")
        return Change(DELETE, schema.FIREWALL_RULE)

    def apply(self, ctx: "InstallContext", change: Change) -> str:
        operation = ctx.firewalls().delete(project=ctx.project, firewall=schema.FIREWALL_RULE)
        clients.wait_global_operation(operation, project=ctx.project, client=ctx.global_operations(), timeout_s=300)
        return change.detail


def uninstall_steps() -> list[Step]:
    return [RemoveService(), RemoveVms(), RemoveDatabase(), RemoveSecrets(), RemoveBucket(), RemoveProjectRoles(),
            RemoveAccounts(), RemoveFirewall()]


def uninstall(ctx: "InstallContext") -> Run:
    from . import permissions

    checked = permissions.check(ctx, uninstall=True)
    ctx.echo(f"  {'ok':<14}permissions: all {checked} that uninstall needs")
    return run_steps(ctx, uninstall_steps(), command="uninstall")
