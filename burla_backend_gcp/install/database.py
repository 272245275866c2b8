"""Steps: the cluster's Firestore database (`burla`, native mode, in the install's region), its
config document, and the installer as the cluster's first administrator.

The config document is written once with schema.ClusterConfig's defaults; a later install adds
only the fields a newer version introduced, and never changes a value (the dashboard's settings
own them). The installer's own user document is added once, as an admin.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from .. import schema
from .steps import CREATE, NONE, UPDATE, Change, Step

if TYPE_CHECKING:
    from .context import InstallContext

CREATE_TIMEOUT_S = 600.0


class Database(Step):
    label = "Firestore database"

    def plan(self, ctx: "InstallContext") -> Change:
        from google.api_core import exceptions

        try:
            database = ctx.firestore_admin().get_database(name=ctx.names.database)
        except exceptions.NotFound:
            return Change(CREATE, f"{schema.DATABASE} (native mode, {ctx.region})")
        return Change(NONE, f"{schema.DATABASE} ({database.location_id})")

    def apply(self, ctx: "InstallContext", change: Change) -> str:
        from google.api_core import exceptions
        from google.cloud.firestore_admin_v1 import types

        try:
            operation = ctx.firestore_admin().create_database(
                parent=f"projects/{ctx.project}", database_id=schema.DATABASE,
                database=types.Database(location_id=ctx.region, type_=types.Database.DatabaseType.FIRESTORE_NATIVE))
            operation.result(timeout=CREATE_TIMEOUT_S)
        except exceptions.Conflict:
            pass  # created by an interrupted run
        return change.detail


def _config_reference(ctx: "InstallContext"):
    return ctx.firestore().collection(schema.CONFIG_COLLECTION).document(schema.CONFIG_DOCUMENT)


class ConfigDocument(Step):
    """The config document; `--allow-from` ranges join its extra_source_ranges, which the
    service admits to the node port besides callers' addresses."""

    label = "cluster config"

    def plan(self, ctx: "InstallContext") -> Change:
        where = f"{schema.CONFIG_COLLECTION}/{schema.CONFIG_DOCUMENT}"
        defaults = schema.ClusterConfig(region=ctx.region, extra_source_ranges=list(ctx.allow_from)).to_document()
        if ctx.endpoint:
            # The GCP stand-in runs every VM on 127.0.0.1: each node agent takes a free port.
            defaults["node_port"] = 0
        snapshot = _config_reference(ctx).get()
        if not snapshot.exists:
            config = schema.ClusterConfig.from_document(defaults)
            return Change(CREATE, f"{where} ({config.machine_type}, idle timeout {config.idle_timeout_s:g} s)",
                          (defaults, []))
        current = snapshot.to_dict() or {}
        new_fields = {key: value for key, value in defaults.items() if key not in current}
        new_ranges = [r for r in ctx.allow_from if r not in (current.get("extra_source_ranges") or [])
                      and "extra_source_ranges" in current]
        if not new_fields and not new_ranges:
            return Change(NONE, where)
        added = sorted(new_fields) + ([f"extra_source_ranges {', '.join(new_ranges)}"] if new_ranges else [])
        return Change(UPDATE, f"{where}: add {', '.join(added)}", (new_fields, new_ranges))

    def apply(self, ctx: "InstallContext", change: Change) -> str:
        from google.api_core import exceptions
        from google.cloud import firestore

        reference = _config_reference(ctx)
        new_fields, new_ranges = change.found
        if change.action == CREATE:
            try:
                reference.create(new_fields)
            except exceptions.Conflict:
                pass  # written an instant ago: leave its values alone
            return change.detail
        updates = dict(new_fields)  # only fields the document lacks: never a value someone set
        if new_ranges:
            updates["extra_source_ranges"] = firestore.ArrayUnion(new_ranges)
        reference.update(updates)
        return change.detail


class FirstAdmin(Step):
    label = "administrator"

    def plan(self, ctx: "InstallContext") -> Change:
        email = ctx.account
        if not email:
            return Change(NONE, "unknown installer account: run `gcloud config set account EMAIL` and install again "
                                "to be added as an admin (project owners are admins anyway)")
        snapshot = ctx.firestore().collection(schema.USERS).document(email).get()
        if snapshot.exists:
            return Change(NONE, f"{email} ({(snapshot.to_dict() or {}).get('role', schema.ROLE_USER)})")
        return Change("add", f"{email} (admin)", email)

    def apply(self, ctx: "InstallContext", change: Change) -> str:
        from google.api_core import exceptions

        try:
            ctx.firestore().collection(schema.USERS).document(change.found).create(
                {"email": change.found, "role": schema.ROLE_ADMIN, "added_at": time.time(), "added_by": "burla install"})
        except exceptions.Conflict:
            pass
        return change.detail
