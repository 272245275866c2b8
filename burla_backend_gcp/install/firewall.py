"""Step: the firewall rule that lets callers reach the node agent's port on the cluster's VMs.

Never 0.0.0.0/0: the rule starts with the default VPC's internal range only (GCE would default
a rule without source ranges to the whole internet), plus any `--allow-from` ranges; the cluster
service adds the addresses of machines that log in and start jobs. A second install never removes
a range the service added: it only restores the port and target tag and adds `--allow-from`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .. import clients, schema
from .steps import CREATE, NONE, UPDATE, Change, Step

if TYPE_CHECKING:
    from .context import InstallContext

FIREWALL_RULE, NODE_TAG = schema.FIREWALL_RULE, schema.NODE_TAG
NODE_PORT = schema.ClusterConfig().node_port
# The default VPC's auto-mode subnets: traffic between the project's own machines.
INTERNAL_RANGES = ("10.128.0.0/9",)
DESCRIPTION = ("Burla: the node agent's port on the cluster's VMs, only from these ranges (the cluster service "
               "adds the addresses callers log in from).")


def desired_rule(ctx: "InstallContext", existing_ranges: list[str] | None = None):
    from google.cloud import compute_v1

    ranges = list(existing_ranges or INTERNAL_RANGES)
    for extra in ctx.allow_from:
        if extra not in ranges:
            ranges.append(extra)
    return compute_v1.Firewall(
        name=FIREWALL_RULE, description=DESCRIPTION, network=f"projects/{ctx.project}/global/networks/default",
        direction="INGRESS", priority=1000,
        allowed=[compute_v1.Allowed(I_p_protocol="tcp", ports=[str(NODE_PORT)])],
        source_ranges=ranges, target_tags=[NODE_TAG])


def _summary(rule) -> str:
    ports = ",".join(f"{a.I_p_protocol}:{'/'.join(a.ports)}" for a in rule.allowed)
    return f"{rule.name}, {ports} from {', '.join(rule.source_ranges)} to tag {', '.join(rule.target_tags)}"


def _matches(rule) -> bool:
    allowed = [(a.I_p_protocol, list(a.ports)) for a in rule.allowed]
    return allowed == [("tcp", [str(NODE_PORT)])] and list(rule.target_tags) == [NODE_TAG] and not rule.disabled


class NodeFirewall(Step):
    label = "firewall rule"

    def plan(self, ctx: "InstallContext") -> Change:
        from google.api_core import exceptions

        try:
            rule = ctx.firewalls().get(project=ctx.project, firewall=FIREWALL_RULE)
        except exceptions.NotFound:
            return Change(CREATE, _summary(desired_rule(ctx)))
        missing_ranges = [r for r in ctx.allow_from if r not in rule.source_ranges]
        if _matches(rule) and not missing_ranges:
            return Change(NONE, _summary(rule))
        ranges = list(rule.source_ranges) or list(INTERNAL_RANGES)
        return Change(UPDATE, _summary(desired_rule(ctx, ranges)), ranges)

    def apply(self, ctx: "InstallContext", change: Change) -> str:
        client = ctx.firewalls()
        if change.action == CREATE:
            operation = client.insert(project=ctx.project, firewall_resource=desired_rule(ctx))
        else:
            operation = client.patch(project=ctx.project, firewall=FIREWALL_RULE,
                                     firewall_resource=desired_rule(ctx, change.found))
        clients.wait_global_operation(operation, project=ctx.project, client=ctx.global_operations(), timeout_s=300)
        return change.detail
