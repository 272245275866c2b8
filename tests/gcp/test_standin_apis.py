"""The install path's APIs in the stand-in, each through its real client: Secret Manager,
Resource Manager, Service Usage, IAM admin (REST), Cloud Storage, Firestore Admin; and the
answers every API shares (401 without a token, 403 naming a missing permission, 403 for an API
that is not enabled)."""

from __future__ import annotations

import json

import pytest
import requests
from google.api_core import exceptions
from google.cloud import secretmanager_v1
from google.cloud.firestore_admin_v1 import types as firestore_admin_types
from google.iam.v1 import policy_pb2

from burla_backend_gcp import clients
from burla_backend_gcp.standin import StandIn

VIEWER = "user:viewer@example.com"


@pytest.fixture(scope="module")
def viewer(standin, project):
    standin.iam.grant(f"projects/{project}", "roles/viewer", VIEWER)
    return standin.credentials(VIEWER)


def test_secrets_versions_and_secret_iam(standin, owner, viewer, project):
    sm = clients.secret_manager(endpoint=standin.url, credentials=owner)
    secret = sm.create_secret(parent=f"projects/{project}", secret_id="node-token",
                              secret={"replication": {"automatic": {}}, "labels": {"burla": "cluster"}})
    assert secret.name == f"projects/{standin.project_number}/secrets/node-token"
    with pytest.raises(exceptions.Conflict, match="already exists"):
        sm.create_secret(parent=f"projects/{project}", secret_id="node-token", secret={"replication": {"automatic": {}}})
    sm.add_secret_version(parent=secret.name, payload={"data": b"first"})
    version = sm.add_secret_version(parent=secret.name, payload=secretmanager_v1.SecretPayload(
        data=b"second", data_crc32c=__import__("google_crc32c").value(b"second")))
    assert version.name.endswith("/versions/2")
    assert sm.access_secret_version(name=f"{secret.name}/versions/latest").payload.data == b"second"
    assert sm.access_secret_version(name=f"{secret.name}/versions/1").payload.data == b"first"
    with pytest.raises(exceptions.BadRequest, match="[Cc]hecksum"):
        sm.add_secret_version(parent=secret.name, payload={"data": b"x", "data_crc32c": 12345})

    reader = clients.secret_manager(endpoint=standin.url, credentials=viewer)
    with pytest.raises(exceptions.Forbidden, match="secretmanager.versions.access") as denied:
        reader.access_secret_version(name=f"{secret.name}/versions/latest")
    assert denied.value.reason == "IAM_PERMISSION_DENIED"
    policy = sm.get_iam_policy(request={"resource": secret.name})
    policy.bindings.append(policy_pb2.Binding(role="roles/secretmanager.secretAccessor", members=[VIEWER]))
    sm.set_iam_policy(request={"resource": secret.name, "policy": policy})
    assert reader.access_secret_version(name=f"{secret.name}/versions/latest").payload.data == b"second"

    assert "node-token" in [s.name.rsplit("/", 1)[-1] for s in sm.list_secrets(parent=f"projects/{project}")]
    sm.delete_secret(name=secret.name)
    with pytest.raises(exceptions.NotFound):
        sm.get_secret(name=secret.name)


def test_project_test_iam_permissions_answers_the_subset_held(standin, owner, viewer, project):
    crm = clients.resource_manager(endpoint=standin.url, credentials=owner)
    got = crm.get_project(name=f"projects/{project}")
    assert got.project_id == project and got.name == f"projects/{standin.project_number}"
    wanted = ["compute.instances.create", "compute.instances.list", "run.services.create",
              "resourcemanager.projects.setIamPolicy"]
    assert crm.test_iam_permissions(resource=f"projects/{project}", permissions=wanted).permissions == wanted
    as_viewer = clients.resource_manager(endpoint=standin.url, credentials=viewer)
    assert as_viewer.test_iam_permissions(resource=f"projects/{project}", permissions=wanted).permissions == [
        "compute.instances.list"]
    with pytest.raises(exceptions.Forbidden):
        crm.get_project(name="projects/someone-elses-project")


def test_project_policy_read_modify_write_and_stale_etag(standin, owner, project):
    crm = clients.resource_manager(endpoint=standin.url, credentials=owner)
    policy = crm.get_iam_policy(request={"resource": f"projects/{project}", "options": {"requested_policy_version": 3}})
    stale = policy_pb2.Policy()
    stale.CopyFrom(policy)
    policy.bindings.append(policy_pb2.Binding(role="roles/datastore.user", members=["serviceAccount:x@y.iam.gserviceaccount.com"]))
    written = crm.set_iam_policy(request={"resource": f"projects/{project}", "policy": policy})
    assert written.etag != stale.etag
    stale.bindings.append(policy_pb2.Binding(role="roles/viewer", members=["user:late@example.com"]))
    with pytest.raises(exceptions.Conflict, match="concurrent policy changes"):
        crm.set_iam_policy(request={"resource": f"projects/{project}", "policy": stale})
    unknown = policy_pb2.Policy(bindings=[policy_pb2.Binding(role="roles/burla.imaginary", members=["user:a@b.c"])],
                                etag=written.etag)
    with pytest.raises(exceptions.BadRequest, match="roles/burla.imaginary"):
        crm.set_iam_policy(request={"resource": f"projects/{project}", "policy": unknown})


def test_an_api_that_is_not_enabled_is_refused_until_enabled():
    with StandIn(enabled_services=()) as fresh:
        owner = fresh.credentials()
        instances = clients.instances(endpoint=fresh.url, credentials=owner)
        with pytest.raises(exceptions.Forbidden, match="Compute Engine API has not been used in project") as denied:
            list(instances.list(project=fresh.project_id, zone="us-central1-a"))
        assert denied.value.reason == "SERVICE_DISABLED"
        usage = clients.service_usage(endpoint=fresh.url, credentials=owner)
        service = usage.get_service(request={"name": f"projects/{fresh.project_id}/services/compute.googleapis.com"})
        assert service.state.name == "DISABLED"
        result = usage.batch_enable_services(request={
            "parent": f"projects/{fresh.project_id}",
            "service_ids": ["compute.googleapis.com", "run.googleapis.com"]}).result(timeout=30)
        assert sorted(s.config.name for s in result.services) == ["compute.googleapis.com", "run.googleapis.com"]
        usage.enable_service(request={"name": f"projects/{fresh.project_id}/services/secretmanager.googleapis.com"}).result(
            timeout=30)
        enabled = usage.list_services(request={"parent": f"projects/{fresh.project_id}", "filter": "state:ENABLED"})
        assert {"compute.googleapis.com", "run.googleapis.com", "secretmanager.googleapis.com"} <= {
            s.config.name for s in enabled}
        assert list(instances.list(project=fresh.project_id, zone="us-central1-a")) == []
        with pytest.raises(exceptions.Forbidden, match="not-an-api.googleapis.com"):
            usage.enable_service(request={"name": f"projects/{fresh.project_id}/services/not-an-api.googleapis.com"})


def test_no_token_is_401_and_an_expired_one_too(standin, project):
    url = f"{standin.url}/v3/projects/{project}"
    assert requests.get(url, timeout=10).status_code == 401
    expired = standin.mint_token(lifetime_s=-1)
    answer = requests.get(url, headers={"Authorization": f"Bearer {expired}"}, timeout=10)
    assert answer.status_code == 401 and answer.json()["error"]["status"] == "UNAUTHENTICATED"
    from google.auth.exceptions import RefreshError
    from google.oauth2.credentials import Credentials

    # The client answers a 401 by refreshing its token, which a bare token cannot: as against Google.
    crm = clients.resource_manager(endpoint=standin.url, credentials=Credentials(token="not-a-real-token"))
    with pytest.raises(RefreshError):
        crm.get_project(name=f"projects/{project}")


def test_service_accounts_and_keys_over_rest(standin, owner, project):
    iam = clients.iam(endpoint=standin.url, credentials=owner)
    account = iam.create_service_account(project, "burla-cluster", "Burla cluster")
    assert account.email == f"burla-cluster@{project}.iam.gserviceaccount.com"
    with pytest.raises(exceptions.Conflict):
        iam.create_service_account(project, "burla-cluster")
    with pytest.raises(exceptions.BadRequest, match="accountId"):
        iam.create_service_account(project, "X")
    assert iam.get_service_account(project, account.email).display_name == "Burla cluster"
    assert account.email in [a.email for a in iam.list_service_accounts(project)]
    policy = iam.get_iam_policy(project, account.email)
    policy.bindings.append(policy_pb2.Binding(role="roles/iam.serviceAccountUser", members=["user:owner@example.com"]))
    assert iam.set_iam_policy(project, account.email, policy).bindings[0].role == "roles/iam.serviceAccountUser"

    key = iam.create_key(project, account.email)
    info = json.loads(key.private_key_data)
    assert info["client_email"] == account.email and info["token_uri"] == f"{standin.url}/token"
    from google.oauth2 import service_account

    as_account = service_account.Credentials.from_service_account_info(info, scopes=list(clients.SCOPES))
    crm = clients.resource_manager(endpoint=standin.url, credentials=as_account)
    assert crm.test_iam_permissions(resource=f"projects/{project}", permissions=["compute.instances.create"]).permissions == []
    standin.iam.grant(f"projects/{project}", "roles/compute.instanceAdmin.v1", f"serviceAccount:{account.email}")
    assert crm.test_iam_permissions(resource=f"projects/{project}", permissions=["compute.instances.create"]).permissions == [
        "compute.instances.create"]
    assert [k.name for k in iam.list_keys(project, account.email)] == [key.name]
    iam.delete_key(project, account.email, key.name.rsplit("/", 1)[-1])
    assert iam.list_keys(project, account.email) == []
    iam.delete_service_account(project, account.email)
    with pytest.raises(exceptions.NotFound):
        iam.get_service_account(project, account.email)


def test_buckets_and_objects(standin, owner, viewer, project):
    gcs = clients.storage(project, endpoint=standin.url, credentials=owner)
    bucket = gcs.create_bucket("burla-standin-test")
    with pytest.raises(exceptions.Conflict):
        gcs.create_bucket("burla-standin-test")
    bucket.cors = [{"origin": ["*"], "method": ["GET", "PUT"], "maxAgeSeconds": 3600}]
    bucket.patch()
    assert gcs.get_bucket("burla-standin-test").cors[0]["method"] == ["GET", "PUT"]
    blob = bucket.blob("wheels/burla.whl")
    blob.upload_from_string(b"x" * 100_000)
    big = bucket.blob("big.bin")
    big.chunk_size = 256 * 1024
    big.upload_from_string(b"y" * (600 * 1024))  # a resumable upload: its URLs must lead back to the stand-in
    assert bucket.blob("big.bin").download_as_bytes() == b"y" * (600 * 1024)
    assert [b.name for b in gcs.list_blobs("burla-standin-test", prefix="wheels/")] == ["wheels/burla.whl"]
    with pytest.raises(exceptions.NotFound):
        bucket.blob("missing").download_as_bytes()
    as_viewer = clients.storage(project, endpoint=standin.url, credentials=viewer)
    with pytest.raises(exceptions.Forbidden, match="storage.buckets.create"):
        as_viewer.create_bucket("viewer-bucket")
    with pytest.raises(exceptions.Forbidden, match="storage.objects.create"):
        as_viewer.bucket("burla-standin-test").blob("nope").upload_from_string(b"x")
    assert as_viewer.bucket("burla-standin-test").blob("wheels/burla.whl").download_as_bytes() == b"x" * 100_000


def test_firestore_databases_are_faked_for_the_emulator(standin, owner, project):
    admin = clients.firestore_admin(endpoint=standin.url, credentials=owner)
    name = f"projects/{project}/databases/burla"
    with pytest.raises(exceptions.NotFound):
        admin.get_database(name=name)
    database = admin.create_database(
        parent=f"projects/{project}", database_id="burla",
        database=firestore_admin_types.Database(location_id="us-central1",
                                             type_=firestore_admin_types.Database.DatabaseType.FIRESTORE_NATIVE),
    ).result(timeout=30)
    assert database.name == name and database.location_id == "us-central1"
    assert admin.get_database(name=name).type_ == firestore_admin_types.Database.DatabaseType.FIRESTORE_NATIVE
    with pytest.raises(exceptions.Conflict):
        admin.create_database(parent=f"projects/{project}", database_id="burla", database=database)
    assert name in [d.name for d in admin.list_databases(parent=f"projects/{project}").databases]


def test_a_chunked_request_body_is_read_whole(standin, project):
    body = json.dumps({"replication": {"automatic": {}}, "labels": {"sent": "in-chunks"}}).encode()
    chunks = (body[i:i + 7] for i in range(0, len(body), 7))  # requests sends a generator chunked
    answer = requests.post(f"{standin.url}/v1/projects/{project}/secrets?secretId=chunked",
                           data=chunks, headers={"Authorization": f"Bearer {standin.mint_token()}",
                                                 "Content-Type": "application/json"}, timeout=10)
    assert answer.status_code == 200, answer.text
    assert answer.json()["labels"] == {"sent": "in-chunks"}
    # The connection is still usable: the next request on it is answered, not misread.
    again = requests.get(f"{standin.url}/v1/projects/{project}/secrets/chunked",
                         headers={"Authorization": f"Bearer {standin.mint_token()}"}, timeout=10)
    assert again.status_code == 200
