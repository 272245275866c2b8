"""Secret Manager in the stand-in: secrets, versions, payloads and secret IAM policies.

Payloads are checked against the client's `dataCrc32c` when it sends one, as the real service
does; accessing needs `secretmanager.versions.access` on the project or on the secret (the
`roles/secretmanager.secretAccessor` binding a cluster grants its service account).
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

import google_crc32c
from google.cloud import secretmanager_v1 as sm
from google.cloud.secretmanager_v1.services.secret_manager_service.transports.rest_base import (
    _BaseSecretManagerServiceRestTransport as _S,
)
from google.iam.v1 import iam_policy_pb2
from google.protobuf import empty_pb2, timestamp_pb2

from .rest import ApiError, Call, Route, invalid, routes_for

if TYPE_CHECKING:
    from . import StandIn

SERVICE = "secretmanager.googleapis.com"


def _now() -> timestamp_pb2.Timestamp:
    stamp = timestamp_pb2.Timestamp()
    stamp.GetCurrentTime()
    return stamp


class SecretManagerApi:
    def __init__(self, standin: "StandIn"):
        self.standin = standin
        self._lock = threading.Lock()
        self._secrets: dict[str, sm.Secret] = {}
        self._versions: dict[str, list[tuple[sm.SecretVersion, bytes]]] = {}

    def routes(self) -> list[Route]:
        def r(base, request_type, handler, name: str) -> list[Route]:
            return routes_for(base, request_type, handler, service=SERVICE, name=name)

        return [
            *r(_S._BaseCreateSecret, sm.CreateSecretRequest, self.create, "secretmanager.secrets.create"),
            *r(_S._BaseGetSecret, sm.GetSecretRequest, self.get, "secretmanager.secrets.get"),
            *r(_S._BaseListSecrets, sm.ListSecretsRequest, self.list, "secretmanager.secrets.list"),
            *r(_S._BaseDeleteSecret, sm.DeleteSecretRequest, self.delete, "secretmanager.secrets.delete"),
            *r(_S._BaseAddSecretVersion, sm.AddSecretVersionRequest, self.add_version, "secretmanager.versions.add"),
            *r(_S._BaseAccessSecretVersion, sm.AccessSecretVersionRequest, self.access, "secretmanager.versions.access"),
            *r(_S._BaseGetSecretVersion, sm.GetSecretVersionRequest, self.get_version, "secretmanager.versions.get"),
            *r(_S._BaseListSecretVersions, sm.ListSecretVersionsRequest, self.list_versions,
               "secretmanager.versions.list"),
            *r(_S._BaseDisableSecretVersion, sm.DisableSecretVersionRequest, self.disable_version,
               "secretmanager.versions.disable"),
            *r(_S._BaseEnableSecretVersion, sm.EnableSecretVersionRequest, self.enable_version,
               "secretmanager.versions.enable"),
            *r(_S._BaseDestroySecretVersion, sm.DestroySecretVersionRequest, self.destroy_version,
               "secretmanager.versions.destroy"),
            *r(_S._BaseGetIamPolicy, iam_policy_pb2.GetIamPolicyRequest, self.get_iam_policy,
               "secretmanager.secrets.getIamPolicy"),
            *r(_S._BaseSetIamPolicy, iam_policy_pb2.SetIamPolicyRequest, self.set_iam_policy,
               "secretmanager.secrets.setIamPolicy"),
            *r(_S._BaseTestIamPermissions, iam_policy_pb2.TestIamPermissionsRequest, self.test_iam_permissions,
               "secretmanager.secrets.testIamPermissions"),
        ]

    # ------------------------------------------------------------ helpers

    def _project_of(self, name: str) -> str:
        project = name.split("/")[1] if name.startswith("projects/") and "/" in name else ""
        self.standin.check_project(project)
        return project

    def _secret_name(self, name: str) -> str:
        """`projects/P/secrets/S[/versions/V]` → `projects/ID/secrets/S`: P may be the id or the
        number (the API answers names with the number, and callers pass them back)."""
        parts = name.split("/")
        self._project_of(name)
        parts[1] = self.standin.project_id
        return "/".join(parts[:4])

    def _parent(self, parent: str) -> str:
        self._project_of(parent)
        return f"projects/{self.standin.project_id}"

    def _secret(self, name: str) -> sm.Secret:
        with self._lock:
            secret = self._secrets.get(name)
        if secret is None:
            raise ApiError(404, f"Secret [{self._numbered(name)}] not found or has no versions.")
        return secret

    def _numbered(self, name: str) -> str:
        parts = name.split("/")
        parts[1] = str(self.standin.project_number)
        return "/".join(parts)

    def _version(self, name: str) -> tuple[sm.SecretVersion, bytes]:
        secret_name = self._secret_name(name)
        self._secret(secret_name)
        wanted = name.rsplit("/", 1)[-1]
        with self._lock:
            versions = self._versions.get(secret_name, [])
            if wanted == "latest":
                enabled = [v for v in versions if v[0].state == sm.SecretVersion.State.ENABLED]
                if enabled:
                    return enabled[-1]
            else:
                for version in versions:
                    if version[0].name.rsplit("/", 1)[-1] == wanted:
                        return version
        raise ApiError(404, f"Secret Version [{self._numbered(name)}] not found.")

    # ------------------------------------------------------------ secrets

    def create(self, call: Call, request: sm.CreateSecretRequest) -> sm.Secret:
        parent = self._parent(request.parent)
        self.standin.iam.require(call.member, "secretmanager.secrets.create", parent)
        if not request.secret_id or len(request.secret_id) > 255 or not all(
                c.isalnum() or c in "-_" for c in request.secret_id):
            raise invalid(f"Secret ID [{request.secret_id}] must match [a-zA-Z_0-9-]{{1,255}}.")
        name = f"{parent}/secrets/{request.secret_id}"
        secret = sm.Secret(request.secret)
        secret.name = self._numbered(name)
        secret.create_time = _now()
        secret.etag = '"standin1"'
        if not secret.replication.automatic and not secret.replication.user_managed.replicas:
            secret.replication = sm.Replication(automatic=sm.Replication.Automatic())
        with self._lock:
            if name in self._secrets:
                raise ApiError(409, f"Secret [{self._numbered(name)}] already exists.")
            self._secrets[name] = secret
            self._versions[name] = []
        return secret

    def get(self, call: Call, request: sm.GetSecretRequest) -> sm.Secret:
        name = self._secret_name(request.name)
        self.standin.iam.require(call.member, "secretmanager.secrets.get", name)
        return self._secret(name)

    def list(self, call: Call, request: sm.ListSecretsRequest) -> sm.ListSecretsResponse:
        parent = self._parent(request.parent)
        self.standin.iam.require(call.member, "secretmanager.secrets.list", parent)
        with self._lock:
            secrets = [s for n, s in sorted(self._secrets.items()) if n.startswith(parent + "/")]
        return sm.ListSecretsResponse(secrets=secrets, total_size=len(secrets))

    def delete(self, call: Call, request: sm.DeleteSecretRequest) -> empty_pb2.Empty:
        name = self._secret_name(request.name)
        self.standin.iam.require(call.member, "secretmanager.secrets.delete", name)
        self._secret(name)
        with self._lock:
            self._secrets.pop(name, None)
            self._versions.pop(name, None)
        self.standin.iam.drop_policy(name)
        return empty_pb2.Empty()

    # ------------------------------------------------------------ versions

    def add_version(self, call: Call, request: sm.AddSecretVersionRequest) -> sm.SecretVersion:
        name = self._secret_name(request.parent)
        self.standin.iam.require(call.member, "secretmanager.versions.add", name)
        self._secret(name)
        data = request.payload.data
        if "data_crc32c" in request.payload and request.payload.data_crc32c != google_crc32c.value(data):
            raise invalid("Checksum in the request does not match the checksum of the payload data.")
        with self._lock:
            versions = self._versions[name]
            version = sm.SecretVersion(name=f"{self._numbered(name)}/versions/{len(versions) + 1}",
                                       create_time=_now(), state=sm.SecretVersion.State.ENABLED, etag='"standin1"')
            versions.append((version, bytes(data)))
        return version

    def access(self, call: Call, request: sm.AccessSecretVersionRequest) -> sm.AccessSecretVersionResponse:
        self.standin.iam.require(call.member, "secretmanager.versions.access", self._secret_name(request.name))
        version, data = self._version(request.name)
        if version.state != sm.SecretVersion.State.ENABLED:
            raise ApiError(400, f"Secret Version [{version.name}] is in {version.state.name} state.",
                           status="FAILED_PRECONDITION")
        return sm.AccessSecretVersionResponse(name=version.name, payload=sm.SecretPayload(
            data=data, data_crc32c=google_crc32c.value(data)))

    def access_as(self, member: str, secret: str, version: str = "latest") -> str:
        """A secret's payload, read with `member`'s permissions (Cloud Run's secret env vars)."""
        name = secret if secret.startswith("projects/") else f"projects/{self.standin.project_id}/secrets/{secret}"
        self.standin.iam.require(member, "secretmanager.versions.access", name)
        _, data = self._version(f"{name}/versions/{version}")
        return data.decode()

    def get_version(self, call: Call, request: sm.GetSecretVersionRequest) -> sm.SecretVersion:
        self.standin.iam.require(call.member, "secretmanager.versions.get", self._secret_name(request.name))
        return self._version(request.name)[0]

    def list_versions(self, call: Call, request: sm.ListSecretVersionsRequest) -> sm.ListSecretVersionsResponse:
        name = self._secret_name(request.parent)
        self.standin.iam.require(call.member, "secretmanager.versions.list", name)
        self._secret(name)
        with self._lock:
            versions = [v for v, _ in reversed(self._versions.get(name, []))]
        return sm.ListSecretVersionsResponse(versions=versions, total_size=len(versions))

    def _set_state(self, call: Call, name: str, permission: str, state) -> sm.SecretVersion:
        self.standin.iam.require(call.member, permission, self._secret_name(name))
        version, _ = self._version(name)
        with self._lock:
            version.state = state
            if state == sm.SecretVersion.State.DESTROYED:
                secret_name = self._secret_name(name)
                self._versions[secret_name] = [(v, b"" if v is version else d) for v, d in self._versions[secret_name]]
                version.destroy_time = _now()
        return version

    def disable_version(self, call: Call, request) -> sm.SecretVersion:
        return self._set_state(call, request.name, "secretmanager.versions.disable", sm.SecretVersion.State.DISABLED)

    def enable_version(self, call: Call, request) -> sm.SecretVersion:
        return self._set_state(call, request.name, "secretmanager.versions.enable", sm.SecretVersion.State.ENABLED)

    def destroy_version(self, call: Call, request) -> sm.SecretVersion:
        return self._set_state(call, request.name, "secretmanager.versions.destroy", sm.SecretVersion.State.DESTROYED)

    # ------------------------------------------------------------ IAM

    def get_iam_policy(self, call: Call, request):
        name = self._secret_name(request.resource)
        self.standin.iam.require(call.member, "secretmanager.secrets.getIamPolicy", name)
        self._secret(name)
        return self.standin.iam.get_policy(name)

    def set_iam_policy(self, call: Call, request):
        name = self._secret_name(request.resource)
        self.standin.iam.require(call.member, "secretmanager.secrets.setIamPolicy", name)
        self._secret(name)
        return self.standin.iam.set_policy(name, request.policy)

    def test_iam_permissions(self, call: Call, request):
        name = self._secret_name(request.resource)
        self._secret(name)
        return iam_policy_pb2.TestIamPermissionsResponse(
            permissions=self.standin.iam.allowed(call.member, list(request.permissions), name))
