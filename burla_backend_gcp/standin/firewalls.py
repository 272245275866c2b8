"""Compute Engine firewall rules and global operations in the stand-in.

Rules are stored and answered as GCE does (insert/get/list/patch/delete, each a global
operation); they filter nothing here: every simulated VM listens on 127.0.0.1. An insert
without `sourceRanges` (or source tags) is stored with 0.0.0.0/0, as GCE defaults it, so a test
can see that a rule would open a port to the world.
"""

from __future__ import annotations

import random
import threading
from typing import TYPE_CHECKING

from google.cloud import compute_v1
from google.cloud.compute_v1.services.firewalls.transports.rest_base import _BaseFirewallsRestTransport as _F
from google.cloud.compute_v1.services.global_operations.transports.rest_base import (
    _BaseGlobalOperationsRestTransport as _G,
)

from .compute import _NAME, LINK, SERVICE, _email
from .filters import matches_filter, page
from .operations import ComputeOperations, now_rfc3339
from .rest import Call, Route, already_exists, invalid, make_route, not_found, rule_of

if TYPE_CHECKING:
    from . import StandIn


class FirewallsApi:
    def __init__(self, standin: "StandIn"):
        self.standin = standin
        self.operations = ComputeOperations(standin.project_id, lambda: LINK)
        self._lock = threading.Lock()
        self._rules: dict[str, compute_v1.Firewall] = {}

    def routes(self) -> list[Route]:
        def r(base, request_type, handler, name: str) -> Route:
            return make_route(rule_of(base), request_type, handler, service=SERVICE, name=name)

        c = compute_v1
        return [
            r(_F._BaseInsert, c.InsertFirewallRequest, self.insert, "compute.firewalls.insert"),
            r(_F._BaseGet, c.GetFirewallRequest, self.get, "compute.firewalls.get"),
            r(_F._BaseList, c.ListFirewallsRequest, self.list, "compute.firewalls.list"),
            r(_F._BasePatch, c.PatchFirewallRequest, self.patch, "compute.firewalls.patch"),
            r(_F._BaseDelete, c.DeleteFirewallRequest, self.delete, "compute.firewalls.delete"),
            r(_G._BaseGet, c.GetGlobalOperationRequest, self.get_operation, "compute.globalOperations.get"),
            r(_G._BaseWait, c.WaitGlobalOperationRequest, self.wait_operation, "compute.globalOperations.wait"),
        ]

    def _check(self, call: Call, project: str, permission: str) -> None:
        self.standin.check_project(project)
        self.standin.iam.require(call.member, permission, f"projects/{project}")

    def _done(self, call: Call, operation_type: str, name: str) -> compute_v1.Operation:
        op = self.operations.start("global", operation_type, f"global/firewalls/{name}", user=_email(call.member))
        self.operations.finish("global", op.name)
        return op  # answered RUNNING, as GCE does; the next get or wait sees DONE

    def _validate(self, rule: compute_v1.Firewall) -> None:
        if not _NAME.match(rule.name):
            raise invalid(f"Invalid value for field 'resource.name': '{rule.name}'.")
        if not rule.allowed and not rule.denied:
            raise invalid("Invalid value for field 'resource': ''. A firewall rule must have an allowed or "
                          "denied list.")
        if rule.allowed and rule.denied:
            raise invalid("Invalid value for field 'resource': ''. A firewall rule cannot have both allowed "
                          "and denied lists.")

    def insert(self, call: Call, request: compute_v1.InsertFirewallRequest) -> compute_v1.Operation:
        self._check(call, request.project, "compute.firewalls.create")
        rule = compute_v1.Firewall(request.firewall_resource)
        self._validate(rule)
        with self._lock:
            if rule.name in self._rules:
                raise already_exists(f"projects/{request.project}/global/firewalls/{rule.name}")
            rule.id = random.getrandbits(63)
            rule.kind = "compute#firewall"
            rule.creation_timestamp = now_rfc3339()
            rule.self_link = f"{LINK}/projects/{request.project}/global/firewalls/{rule.name}"
            rule.network = rule.network or f"{LINK}/projects/{request.project}/global/networks/default"
            rule.direction = rule.direction or "INGRESS"
            rule.priority = rule.priority or 1000
            if rule.direction == "INGRESS" and not rule.source_ranges and not rule.source_tags:
                rule.source_ranges = ["0.0.0.0/0"]
            self._rules[rule.name] = rule
        return self._done(call, "insert", rule.name)

    def _rule(self, project: str, name: str) -> compute_v1.Firewall:
        with self._lock:
            rule = self._rules.get(name)
            if rule is None:
                raise not_found(f"projects/{project}/global/firewalls/{name}")
            return compute_v1.Firewall(rule)

    def get(self, call: Call, request) -> compute_v1.Firewall:
        self._check(call, request.project, "compute.firewalls.get")
        return self._rule(request.project, request.firewall)

    def list(self, call: Call, request) -> compute_v1.FirewallList:
        self._check(call, request.project, "compute.firewalls.list")
        with self._lock:
            items = [compute_v1.Firewall(r) for _, r in sorted(self._rules.items())]
        items = [i for i in items if matches_filter(i, request.filter)]
        chosen, token = page(items, request.max_results, request.page_token)
        return compute_v1.FirewallList(items=chosen, next_page_token=token, kind="compute#firewallList")

    def patch(self, call: Call, request: compute_v1.PatchFirewallRequest) -> compute_v1.Operation:
        self._check(call, request.project, "compute.firewalls.update")
        current = self._rule(request.project, request.firewall)
        changes = request.firewall_resource
        merged = compute_v1.Firewall(current)
        compute_v1.Firewall.pb(merged).MergeFrom(compute_v1.Firewall.pb(changes))
        # A patch replaces repeated fields it names instead of appending to them.
        for name in ("allowed", "denied", "source_ranges", "target_tags", "source_tags", "destination_ranges"):
            if getattr(changes, name):
                setattr(merged, name, getattr(changes, name))
        merged.name = current.name
        self._validate(merged)
        with self._lock:
            self._rules[current.name] = merged
        return self._done(call, "patch", current.name)

    def delete(self, call: Call, request) -> compute_v1.Operation:
        self._check(call, request.project, "compute.firewalls.delete")
        with self._lock:
            if self._rules.pop(request.firewall, None) is None:
                raise not_found(f"projects/{request.project}/global/firewalls/{request.firewall}")
        return self._done(call, "delete", request.firewall)

    def get_operation(self, call: Call, request) -> compute_v1.Operation:
        self._check(call, request.project, "compute.globalOperations.get")
        return self.operations.get("global", request.operation)

    def wait_operation(self, call: Call, request) -> compute_v1.Operation:
        self._check(call, request.project, "compute.globalOperations.get")
        return self.operations.wait("global", request.operation)

    def rules(self) -> list[compute_v1.Firewall]:
        with self._lock:
            return [compute_v1.Firewall(r) for r in self._rules.values()]
