"""Who may do what in the stand-in's project: roles, IAM policies, bearer tokens.

Every API request carries `Authorization: Bearer TOKEN`; the token names its member
(`user:alice@example.com`, `serviceAccount:…`). Tokens come from the metadata server (one per
service account of a simulated VM or Cloud Run service) or from `mint()` (a test's "user").
A member holds a permission on a resource when a binding of the project's policy, or of the
resource's own policy (a secret, a Cloud Run service, a service account, a bucket), grants it a
role containing that permission. A missing permission is answered as Google answers it: 403
`PERMISSION_DENIED`, the permission named in the message and in the ErrorInfo's metadata.

Roles are a table of the predefined roles the project uses (patterns of permissions); a policy
naming a role outside it is refused with 400, as Google refuses an unknown role. Tests add roles
with `define_role`. Binding conditions are not evaluated.
"""

from __future__ import annotations

import fnmatch
import secrets
import threading
import time
from dataclasses import dataclass
from typing import Callable

from google.iam.v1 import policy_pb2

from .rest import ApiError, invalid

_ALL = ("*",)
# Editor is everything but changing who may do things; viewer reads everything.
_NOT_EDITOR = ("*.setIamPolicy", "resourcemanager.projects.delete", "iam.roles.*")
_READS = ("*.get", "*.list", "*.getIamPolicy", "*.wait", "*.aggregatedList")

PREDEFINED_ROLES: dict[str, tuple[str, ...]] = {
    "roles/owner": _ALL,
    "roles/editor": _ALL,
    "roles/viewer": _READS,
    "roles/compute.admin": ("compute.*",),
    "roles/compute.instanceAdmin.v1": ("compute.instances.*", "compute.zoneOperations.*",
                                       "compute.machineTypes.*", "compute.disks.*", "compute.zones.*",
                                       "compute.images.useReadOnly", "compute.subnetworks.use*"),
    # As on Google: a firewall rule is created with updatePolicy on its network too.
    "roles/compute.securityAdmin": ("compute.firewalls.*", "compute.globalOperations.*",
                                    "compute.networks.updatePolicy"),
    "roles/compute.viewer": ("compute.*.get", "compute.*.list", "compute.*.aggregatedList"),
    "roles/run.admin": ("run.*",),
    "roles/run.developer": ("run.services.create", "run.services.get", "run.services.list",
                            "run.services.update", "run.services.delete", "run.operations.*"),
    "roles/run.invoker": ("run.routes.invoke", "run.services.get"),
    "roles/secretmanager.admin": ("secretmanager.*",),
    "roles/secretmanager.secretAccessor": ("secretmanager.versions.access",),
    "roles/secretmanager.viewer": ("secretmanager.*.get", "secretmanager.*.list"),
    "roles/secretmanager.secretVersionAdder": ("secretmanager.versions.add",),
    "roles/datastore.owner": ("datastore.*",),
    "roles/datastore.user": ("datastore.entities.*", "datastore.databases.get", "datastore.databases.getMetadata"),
    "roles/datastore.viewer": ("datastore.entities.get", "datastore.entities.list", "datastore.databases.get"),
    "roles/iam.serviceAccountAdmin": ("iam.serviceAccounts.*",),
    "roles/iam.serviceAccountUser": ("iam.serviceAccounts.actAs", "iam.serviceAccounts.get",
                                     "iam.serviceAccounts.list"),
    "roles/iam.serviceAccountKeyAdmin": ("iam.serviceAccountKeys.*",),
    "roles/iam.serviceAccountTokenCreator": ("iam.serviceAccounts.getAccessToken",
                                             "iam.serviceAccounts.signBlob", "iam.serviceAccounts.getOpenIdToken"),
    "roles/storage.admin": ("storage.*",),
    "roles/storage.objectAdmin": ("storage.objects.*",),
    "roles/storage.objectViewer": ("storage.objects.get", "storage.objects.list"),
    "roles/serviceusage.serviceUsageAdmin": ("serviceusage.*",),
    "roles/serviceusage.serviceUsageConsumer": ("serviceusage.services.get", "serviceusage.services.list",
                                                "serviceusage.services.use"),
    "roles/resourcemanager.projectIamAdmin": ("resourcemanager.projects.get", "resourcemanager.projects.getIamPolicy",
                                              "resourcemanager.projects.setIamPolicy"),
    "roles/logging.logWriter": ("logging.logEntries.create",),
    "roles/monitoring.metricWriter": ("monitoring.timeSeries.create",),
}

PUBLIC_MEMBERS = ("allUsers", "allAuthenticatedUsers")
_MEMBER_KINDS = ("user:", "serviceAccount:", "group:", "domain:", "principal:", "principalSet:", "deleted:")


@dataclass
class Token:
    member: str
    expires_at: float


class Iam:
    """Roles, the project policy, resource policies and tokens of one stand-in project."""

    def __init__(self, project_id: str):
        self.project_id = project_id
        self._lock = threading.Lock()
        self._roles: dict[str, tuple[str, ...]] = dict(PREDEFINED_ROLES)
        self._policies: dict[str, policy_pb2.Policy] = {}
        self._tokens: dict[str, Token] = {}
        self._etag_counter = 0
        # Set by the stand-in: the member a self-signed JWT names, if its signature checks out.
        self.jwt_verifier: Callable[[str], str | None] | None = None

    # ------------------------------------------------------------ tokens

    def mint(self, member: str, lifetime_s: float = 3600.0) -> str:
        """A bearer token for `member` ("user:x@y" or "serviceAccount:x@y")."""
        check_member(member)
        token = "standin." + secrets.token_urlsafe(24)
        with self._lock:
            self._tokens[token] = Token(member, time.time() + lifetime_s)
        return token

    def member_of(self, authorization: str | None) -> str:
        """The member a request's `Authorization` header names; 401 as Google answers otherwise."""
        if not authorization or not authorization.startswith("Bearer "):
            raise ApiError(401, "Request is missing required authentication credential. Expected OAuth 2 "
                                "access token, login cookie or other valid authentication credential.",
                           reason="CREDENTIALS_MISSING")
        bearer = authorization[len("Bearer "):].strip()
        with self._lock:
            token = self._tokens.get(bearer)
        if token is None and bearer.count(".") == 2 and self.jwt_verifier is not None:
            # A service account key's self-signed JWT, which the GAPIC clients send as is.
            member = self.jwt_verifier(bearer)
            if member:
                return member
        if token is None or token.expires_at < time.time():
            raise ApiError(401, "Request had invalid authentication credentials. Expected OAuth 2 access "
                                "token, login cookie or other valid authentication credential.",
                           reason="ACCESS_TOKEN_EXPIRED" if token else "ACCESS_TOKEN_TYPE_UNSUPPORTED")
        return token.member

    def revoke(self, member: str) -> None:
        with self._lock:
            for key in [k for k, t in self._tokens.items() if t.member == member]:
                del self._tokens[key]

    # ------------------------------------------------------------ roles and policies

    def define_role(self, role: str, permissions: list[str]) -> None:
        """Add a role (a custom `projects/P/roles/X`, or a predefined one missing from the table)."""
        with self._lock:
            self._roles[role] = tuple(permissions)

    def role_permissions(self, role: str) -> tuple[str, ...]:
        return self._roles.get(role, ())

    def get_policy(self, resource: str) -> policy_pb2.Policy:
        with self._lock:
            policy = policy_pb2.Policy()
            policy.CopyFrom(self._policies.get(resource, policy_pb2.Policy(version=1, etag=b"ACAB")))
            return policy

    def set_policy(self, resource: str, policy: policy_pb2.Policy, *, check_etag: bool = True) -> policy_pb2.Policy:
        """Replace a resource's policy (Google's read-modify-write: a stale etag gets 409)."""
        for binding in policy.bindings:
            if binding.role not in self._roles:
                raise invalid(f"Role {binding.role} is not supported for this resource.")
            for member in binding.members:
                check_member(member)
        with self._lock:
            current = self._policies.get(resource)
            if check_etag and policy.etag and current is not None and policy.etag != current.etag:
                raise ApiError(409, "There were concurrent policy changes. Please retry the whole "
                                    "read-modify-write with exponential backoff.", status="ABORTED")
            self._etag_counter += 1
            stored = policy_pb2.Policy()
            stored.CopyFrom(policy)
            stored.version = stored.version or 1
            stored.etag = b"BwY" + str(self._etag_counter).encode()
            self._policies[resource] = stored
            result = policy_pb2.Policy()
            result.CopyFrom(stored)
            return result

    def grant(self, resource: str, role: str, member: str) -> None:
        """Add `member` to `role` on `resource` (a test's shortcut for a read-modify-write)."""
        policy = self.get_policy(resource)
        for binding in policy.bindings:
            if binding.role == role:
                if member not in binding.members:
                    binding.members.append(member)
                break
        else:
            policy.bindings.add(role=role, members=[member])
        self.set_policy(resource, policy, check_etag=False)

    def revoke_role(self, resource: str, role: str, member: str) -> None:
        policy = self.get_policy(resource)
        for binding in policy.bindings:
            if binding.role == role and member in binding.members:
                binding.members.remove(member)
        self.set_policy(resource, policy, check_etag=False)

    def drop_policy(self, resource: str) -> None:
        with self._lock:
            self._policies.pop(resource, None)

    # ------------------------------------------------------------ checks

    def _grants(self, member: str, permission: str, resource: str | None) -> bool:
        resources = [f"projects/{self.project_id}"] + ([resource] if resource else [])
        with self._lock:
            policies = [self._policies[r] for r in resources if r in self._policies]
        for policy in policies:
            for binding in policy.bindings:
                if not _is_member(member, binding.members):
                    continue
                patterns = self._roles.get(binding.role, ())
                if binding.role == "roles/editor" and any(fnmatch.fnmatchcase(permission, p) for p in _NOT_EDITOR):
                    continue
                if any(fnmatch.fnmatchcase(permission, p) for p in patterns):
                    return True
        return False

    def allowed(self, member: str, permissions: list[str], resource: str | None = None) -> list[str]:
        """The subset of `permissions` the member holds (testIamPermissions)."""
        return [p for p in permissions if self._grants(member, p, resource)]

    def require(self, member: str, permission: str, resource: str) -> None:
        """403 naming the permission unless the member holds it on `resource` (or the project)."""
        if not self._grants(member, permission, resource):
            raise ApiError(
                403, f"Permission '{permission}' denied on resource '{resource}' (or it may not exist).",
                reason="IAM_PERMISSION_DENIED", domain="iam.googleapis.com",
                metadata={"permission": permission, "resource": resource},
            )


def check_member(member: str) -> None:
    if member in PUBLIC_MEMBERS or member.startswith(_MEMBER_KINDS):
        return
    raise invalid(f"Invalid principal {member!r}: expected user:EMAIL, serviceAccount:EMAIL, group:EMAIL, "
                  f"domain:DOMAIN, allUsers or allAuthenticatedUsers.")


def _is_member(member: str, members) -> bool:
    return member in members or "allUsers" in members or (
        "allAuthenticatedUsers" in members and member != "")
