"""Step: the cluster's Cloud Storage bucket (the service's code, job data), private to the
cluster: uniform bucket-level access, public access prevented, objects usable by its two
service accounts only."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .accounts import bucket_wanted, describe
from .steps import CREATE, NONE, Change, Step

if TYPE_CHECKING:
    from .context import InstallContext


def _missing(ctx: "InstallContext", bucket) -> dict[str, set[str]]:
    policy = bucket.get_iam_policy()
    missing = {role: members - set(policy.get(role, set())) for role, members in bucket_wanted(ctx.names).items()}
    return {role: members for role, members in missing.items() if members}


class Bucket(Step):
    label = "bucket"

    def plan(self, ctx: "InstallContext") -> Change:
        from google.api_core import exceptions

        name = ctx.names.bucket
        try:
            bucket = ctx.storage().get_bucket(name)
        except exceptions.NotFound:
            return Change(CREATE, f"gs://{name} ({ctx.region}, private)")
        missing = _missing(ctx, bucket)
        if not missing:
            return Change(NONE, f"gs://{name}")
        return Change("grant", f"gs://{name}: {describe(missing)}", bucket)

    def apply(self, ctx: "InstallContext", change: Change) -> str:
        from google.api_core import exceptions

        client = ctx.storage()
        bucket = change.found
        if change.action == CREATE:
            bucket = client.bucket(ctx.names.bucket)
            bucket.iam_configuration.uniform_bucket_level_access_enabled = True
            bucket.iam_configuration.public_access_prevention = "enforced"
            bucket.labels = {"burla": "cluster"}
            try:
                bucket = client.create_bucket(bucket, location=ctx.region)
            except exceptions.Conflict:
                # Taken: ours from an interrupted run (then get works), or someone else's name.
                try:
                    bucket = client.get_bucket(ctx.names.bucket)
                except exceptions.Forbidden:
                    raise exceptions.Conflict(f"the bucket name {ctx.names.bucket} belongs to another project; "
                                              f"bucket names are global") from None
        policy = bucket.get_iam_policy()
        for role, members in bucket_wanted(ctx.names).items():
            policy[role] = set(policy.get(role, set())) | members
        bucket.set_iam_policy(policy)
        return change.detail
