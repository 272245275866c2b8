"""The one factory of Google Cloud clients for backend "gcp": every client the project uses is
built here, pointed at Google, or at the GCP stand-in when asked.

    endpoint = the `endpoint=` argument, else $BURLA_GCP_STANDIN (http://127.0.0.1:PORT), else Google
    credentials = the `credentials=` argument, else google.auth.default() (on a VM or Cloud Run,
                  and in the stand-in's processes, that is the metadata server)

Every client uses `transport="rest"`: the stand-in speaks REST, and grpc's own resolver would
escape the loopback guard (netguard.py), which each function installs when BURLA_NETGUARD=1.

Compute Engine's operations: never call `ExtendedOperation.result()` or `.done()` — the client
polls them through an operations client built on Google's default endpoint (GCP.md §3a). Wait
with `wait_zone_operation` / `wait_global_operation`, which loop on the operations' `wait`
method until DONE and raise `GcpOperationFailed` carrying GCE's reasons (QUOTA_EXCEEDED,
ZONE_RESOURCE_POOL_EXHAUSTED). Against the stand-in the hidden operations clients are also
pointed at it, so a stray `.result()` cannot reach Google.

Everything Google is imported inside the functions: importing this module costs nothing.
"""

from __future__ import annotations

import os
import time
from typing import TYPE_CHECKING, Any

from . import netguard
from .errors import GcpCredentialsMissing, GcpOperationFailed, GcpOperationTimeout, GcpStandinMisconfigured, OperationError

if TYPE_CHECKING:
    from google.auth.credentials import Credentials
    from google.cloud import compute_v1

STANDIN_ENV = "BURLA_GCP_STANDIN"
SCOPES = ("https://www.googleapis.com/auth/cloud-platform",)


def standin_endpoint(endpoint: str | None = None) -> str | None:
    """The stand-in's URL if one is asked for (argument, else $BURLA_GCP_STANDIN), else None."""
    return (endpoint or os.environ.get(STANDIN_ENV) or "").rstrip("/") or None


def default_credentials(credentials: "Credentials | None" = None) -> "Credentials":
    if credentials is not None:
        return credentials
    import google.auth
    from google.auth.exceptions import DefaultCredentialsError

    try:
        found, _ = google.auth.default(scopes=list(SCOPES))
    except DefaultCredentialsError as exc:
        raise GcpCredentialsMissing(
            f"No Google credentials found ({exc}). Run `gcloud auth application-default login`, or set "
            f"GOOGLE_APPLICATION_CREDENTIALS to a key file."
        ) from None
    return found


def default_project(project: str | None = None) -> str:
    """The project to use: the argument, else google.auth's (credentials, gcloud config, metadata)."""
    if project:
        return project
    project = os.environ.get("GOOGLE_CLOUD_PROJECT")
    if project:
        return project
    import google.auth
    from google.auth.exceptions import DefaultCredentialsError

    try:
        _, found = google.auth.default(scopes=list(SCOPES))
    except DefaultCredentialsError:
        found = None
    if not found:
        raise GcpCredentialsMissing("No Google Cloud project set: run `gcloud config set project PROJECT_ID`.")
    return found


def _prepare(endpoint: str | None, credentials: "Credentials | None") -> tuple[str | None, "Credentials", Any]:
    netguard.install_if_asked()
    from google.api_core.client_options import ClientOptions

    url = standin_endpoint(endpoint)
    return url, default_credentials(credentials), (ClientOptions(api_endpoint=url) if url else None)


def _compute(client_class, other_operations: tuple[str, ...], endpoint, credentials):
    url, creds, options = _prepare(endpoint, credentials)
    client = client_class(credentials=creds, client_options=options, transport="rest")
    if url:
        # Defuse the operation-polling trap (GCP.md §3a): the transport builds its hidden
        # operations clients on Google's endpoint. A private attribute, hence the guard.
        services = getattr(client._transport, "_extended_operations_services", None)
        if isinstance(services, dict):
            from google.cloud import compute_v1

            factories = {"zone_operations": compute_v1.ZoneOperationsClient,
                         "global_operations": compute_v1.GlobalOperationsClient,
                         "region_operations": compute_v1.RegionOperationsClient}
            for key in other_operations:
                services[key] = factories[key](credentials=creds, client_options=options, transport="rest")
    return client


# ---------------------------------------------------------------- Compute Engine


def instances(*, endpoint: str | None = None, credentials: "Credentials | None" = None) -> "compute_v1.InstancesClient":
    from google.cloud import compute_v1

    return _compute(compute_v1.InstancesClient, ("zone_operations",), endpoint, credentials)


def zone_operations(*, endpoint: str | None = None, credentials: "Credentials | None" = None):
    from google.cloud import compute_v1

    return _compute(compute_v1.ZoneOperationsClient, (), endpoint, credentials)


def global_operations(*, endpoint: str | None = None, credentials: "Credentials | None" = None):
    from google.cloud import compute_v1

    return _compute(compute_v1.GlobalOperationsClient, (), endpoint, credentials)


def firewalls(*, endpoint: str | None = None, credentials: "Credentials | None" = None):
    from google.cloud import compute_v1

    return _compute(compute_v1.FirewallsClient, ("global_operations",), endpoint, credentials)


def machine_types(*, endpoint: str | None = None, credentials: "Credentials | None" = None):
    from google.cloud import compute_v1

    return _compute(compute_v1.MachineTypesClient, (), endpoint, credentials)


def zones(*, endpoint: str | None = None, credentials: "Credentials | None" = None):
    from google.cloud import compute_v1

    return _compute(compute_v1.ZonesClient, (), endpoint, credentials)


def _wait(operation: Any, wait_once, scope: str, timeout_s: float) -> "compute_v1.Operation":
    from google.cloud import compute_v1

    name = operation if isinstance(operation, str) else operation.name
    deadline = time.monotonic() + timeout_s
    while True:
        current = wait_once(name)
        if current.status == compute_v1.Operation.Status.DONE:
            break
        if time.monotonic() >= deadline:
            raise GcpOperationTimeout(f"Google Cloud operation {name} ({scope}) was not done after {timeout_s:g} s; "
                                      f"its last status was {current.status.name}.")
    if current.error.errors:
        raise GcpOperationFailed(name, current.target_link or scope,
                                 [OperationError(e.code, e.message) for e in current.error.errors],
                                 current.http_error_status_code)
    return current


def wait_zone_operation(operation: Any, *, project: str, zone: str, client=None, timeout_s: float = 600.0,
                        endpoint: str | None = None, credentials: "Credentials | None" = None) -> "compute_v1.Operation":
    """Wait until a zonal operation (an `insert`'s answer, or its name) is DONE; raise
    GcpOperationFailed with GCE's reasons if it failed, GcpOperationTimeout past `timeout_s`."""
    client = client or zone_operations(endpoint=endpoint, credentials=credentials)
    return _wait(operation, lambda name: client.wait(project=project, zone=zone, operation=name),
                 f"zones/{zone}", timeout_s)


def wait_global_operation(operation: Any, *, project: str, client=None, timeout_s: float = 600.0,
                          endpoint: str | None = None, credentials: "Credentials | None" = None) -> "compute_v1.Operation":
    """Wait until a global operation (a firewall change) is DONE; errors as wait_zone_operation."""
    client = client or global_operations(endpoint=endpoint, credentials=credentials)
    return _wait(operation, lambda name: client.wait(project=project, operation=name), "global", timeout_s)


# ---------------------------------------------------------------- the other APIs


def run_services(*, endpoint: str | None = None, credentials: "Credentials | None" = None):
    from google.cloud import run_v2

    _, creds, options = _prepare(endpoint, credentials)
    return run_v2.ServicesClient(credentials=creds, client_options=options, transport="rest")


def secret_manager(*, endpoint: str | None = None, credentials: "Credentials | None" = None):
    from google.cloud import secretmanager_v1

    _, creds, options = _prepare(endpoint, credentials)
    return secretmanager_v1.SecretManagerServiceClient(credentials=creds, client_options=options, transport="rest")


def access_secrets_on_a_vm(project: str, names: list[str], timeout_s: float = 30.0) -> dict[str, str]:
    """The latest versions of these secrets, read over REST as the VM's service account (one
    token from the metadata server), with the standard library only: a VM's node supervisor reads
    its secrets before anything else and should not wait for the Secret Manager client to import."""
    import base64
    import json
    import urllib.request

    netguard.install_if_asked()
    metadata = (os.environ.get("BURLA_METADATA_URL") or "http://metadata.google.internal").rstrip("/")
    request = urllib.request.Request(f"{metadata}/computeMetadata/v1/instance/service-accounts/default/token",
                                     headers={"Metadata-Flavor": "Google"})
    with urllib.request.urlopen(request, timeout=timeout_s) as answer:
        token = json.loads(answer.read())["access_token"]
    base = standin_endpoint() or "https://secretmanager.googleapis.com"
    values = {}
    for name in names:
        request = urllib.request.Request(f"{base}/v1/projects/{project}/secrets/{name}/versions/latest:access",
                                         headers={"Authorization": f"Bearer {token}"})
        with urllib.request.urlopen(request, timeout=timeout_s) as answer:
            values[name] = base64.b64decode(json.loads(answer.read())["payload"]["data"]).decode()
    return values


def resource_manager(*, endpoint: str | None = None, credentials: "Credentials | None" = None):
    from google.cloud import resourcemanager_v3

    _, creds, options = _prepare(endpoint, credentials)
    return resourcemanager_v3.ProjectsClient(credentials=creds, client_options=options, transport="rest")


def service_usage(*, endpoint: str | None = None, credentials: "Credentials | None" = None):
    from google.cloud import service_usage_v1

    _, creds, options = _prepare(endpoint, credentials)
    return service_usage_v1.ServiceUsageClient(credentials=creds, client_options=options, transport="rest")


def firestore_admin(*, endpoint: str | None = None, credentials: "Credentials | None" = None):
    from google.cloud import firestore_admin_v1

    _, creds, options = _prepare(endpoint, credentials)
    return firestore_admin_v1.FirestoreAdminClient(credentials=creds, client_options=options, transport="rest")


def storage(project: str | None = None, *, endpoint: str | None = None, credentials: "Credentials | None" = None):
    from google.cloud import storage as gcs

    url, creds, _ = _prepare(endpoint, credentials)
    return gcs.Client(project=default_project(project), credentials=creds,
                      client_options={"api_endpoint": url} if url else None)


def firestore(project: str | None = None, database: str = "(default)", *, endpoint: str | None = None,
              credentials: "Credentials | None" = None):
    """A Firestore client. Against the stand-in, documents live in Google's Firestore emulator,
    which the client finds through $FIRESTORE_EMULATOR_HOST (StandIn.environment() sets it); the
    client speaks gRPC there, the one exception to REST (the emulator is on 127.0.0.1)."""
    from google.cloud import firestore as fs

    url = standin_endpoint(endpoint)
    netguard.install_if_asked()
    if url:
        if not os.environ.get("FIRESTORE_EMULATOR_HOST"):
            raise GcpStandinMisconfigured(
                f"{STANDIN_ENV} is set but FIRESTORE_EMULATOR_HOST is not: start the stand-in with the Firestore "
                f"emulator (StandIn(firestore=True), or `burla gcp simulate`) and export what it prints.")
        return fs.Client(project=default_project(project), database=database)
    return fs.Client(project=default_project(project), database=database, credentials=default_credentials(credentials))


def iam(*, endpoint: str | None = None, credentials: "Credentials | None" = None) -> "IamRest":
    """IAM admin (service accounts, keys, their IAM policies) over REST: google-cloud-iam's
    iam_admin_v1 client is gRPC only."""
    url, creds, _ = _prepare(endpoint, credentials)
    return IamRest(url or "https://iam.googleapis.com", creds)


class IamRest:
    """The IAM admin calls the project makes, over REST, answering `iam_admin_v1` messages and
    raising `google.api_core.exceptions` as the GAPIC clients do."""

    def __init__(self, base_url: str, credentials: "Credentials"):
        from google.auth.transport.requests import AuthorizedSession

        self._base = base_url.rstrip("/") + "/v1"
        self._session = AuthorizedSession(credentials)

    def _call(self, method: str, path: str, body: Any = None, answer: Any = None, timeout_s: float = 60.0):
        from google.api_core import exceptions
        from google.protobuf import json_format

        response = self._session.request(method, f"{self._base}/{path}", json=body, timeout=timeout_s)
        if response.status_code >= 400:
            raise exceptions.from_http_response(response)
        if answer is None:
            return None
        message = answer()
        pb = type(message).pb(message) if hasattr(type(message), "pb") else message
        json_format.Parse(response.content or b"{}", pb, ignore_unknown_fields=True)
        return message

    def create_service_account(self, project: str, account_id: str, display_name: str = "", description: str = ""):
        from google.cloud import iam_admin_v1

        body = {"accountId": account_id, "serviceAccount": {"displayName": display_name, "description": description}}
        return self._call("POST", f"projects/{project}/serviceAccounts", body, iam_admin_v1.ServiceAccount)

    def get_service_account(self, project: str, email: str):
        from google.cloud import iam_admin_v1

        return self._call("GET", f"projects/{project}/serviceAccounts/{email}", None, iam_admin_v1.ServiceAccount)

    def list_service_accounts(self, project: str) -> list:
        from google.cloud import iam_admin_v1

        answer = self._call("GET", f"projects/{project}/serviceAccounts", None, iam_admin_v1.ListServiceAccountsResponse)
        return list(answer.accounts)

    def delete_service_account(self, project: str, email: str) -> None:
        self._call("DELETE", f"projects/{project}/serviceAccounts/{email}")

    def get_iam_policy(self, project: str, email: str):
        from google.iam.v1 import policy_pb2

        return self._call("POST", f"projects/{project}/serviceAccounts/{email}:getIamPolicy", {}, policy_pb2.Policy)

    def set_iam_policy(self, project: str, email: str, policy):
        from google.iam.v1 import policy_pb2
        from google.protobuf import json_format

        body = {"policy": json_format.MessageToDict(policy)}
        return self._call("POST", f"projects/{project}/serviceAccounts/{email}:setIamPolicy", body, policy_pb2.Policy)

    def create_key(self, project: str, email: str):
        from google.cloud import iam_admin_v1

        return self._call("POST", f"projects/{project}/serviceAccounts/{email}/keys",
                          {"privateKeyType": "TYPE_GOOGLE_CREDENTIALS_FILE", "keyAlgorithm": "KEY_ALG_RSA_2048"},
                          iam_admin_v1.ServiceAccountKey)

    def list_keys(self, project: str, email: str) -> list:
        from google.cloud import iam_admin_v1

        answer = self._call("GET", f"projects/{project}/serviceAccounts/{email}/keys", None,
                            iam_admin_v1.ListServiceAccountKeysResponse)
        return list(answer.keys)

    def delete_key(self, project: str, email: str, key_id: str) -> None:
        self._call("DELETE", f"projects/{project}/serviceAccounts/{email}/keys/{key_id}")
