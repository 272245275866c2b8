"""Step: enable the Google Cloud APIs the cluster uses (Service Usage), only those not enabled."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .steps import NONE, Change, Step

if TYPE_CHECKING:
    from .context import InstallContext

REQUIRED_APIS = (
    "compute.googleapis.com",  # the nodes' VMs and their firewall rule
    "run.googleapis.com",  # the cluster service
    "secretmanager.googleapis.com",  # the node token and the cluster CA
    "firestore.googleapis.com",  # config, nodes, jobs, token hashes
    "iam.googleapis.com",  # the cluster's service accounts
    "iamcredentials.googleapis.com",  # tokens for those accounts
    "storage.googleapis.com",  # the bucket: the service's code, job data
    "cloudresourcemanager.googleapis.com",  # the project's IAM policy
)
ENABLE_TIMEOUT_S = 600.0


def enabled_apis(ctx: "InstallContext") -> set[str]:
    client = ctx.service_usage()
    found: set[str] = set()
    for service in client.list_services(request={"parent": f"projects/{ctx.project}", "filter": "state:ENABLED",
                                                 "page_size": 200}):
        found.add(service.config.name or service.name.rsplit("/", 1)[-1])
    return found


def short(api: str) -> str:
    return api.removesuffix(".googleapis.com")


class EnableApis(Step):
    label = "APIs"

    def plan(self, ctx: "InstallContext") -> Change:
        missing = [api for api in REQUIRED_APIS if api not in enabled_apis(ctx)]
        if not missing:
            return Change(NONE, f"{len(REQUIRED_APIS)} enabled")
        return Change("enable", ", ".join(short(a) for a in missing), missing)

    def apply(self, ctx: "InstallContext", change: Change) -> str:
        operation = ctx.service_usage().batch_enable_services(
            request={"parent": f"projects/{ctx.project}", "service_ids": list(change.found)})
        operation.result(timeout=ENABLE_TIMEOUT_S)
        return ", ".join(short(a) for a in change.found)
