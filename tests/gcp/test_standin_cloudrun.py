"""Cloud Run in the stand-in: a deployed service is a local process answering on its URI, an
update starts a new revision, a delete kills it; all through the real run_v2 client."""

from __future__ import annotations

import json

import pytest
from google.api_core import exceptions
from google.cloud import run_v2
from google.iam.v1 import policy_pb2

from burla_backend_gcp import clients
from burla_backend_gcp.standin.processes import group_alive

from .conftest import http_get

REGION = "us-central1"
IMAGE = "us-docker.pkg.dev/burla-test/hello/hello:1.0"


def service_spec(greeting: str, image: str = IMAGE, account: str = "") -> run_v2.Service:
    return run_v2.Service(
        ingress=run_v2.IngressTraffic.INGRESS_TRAFFIC_ALL,
        template=run_v2.RevisionTemplate(
            service_account=account,
            scaling=run_v2.RevisionScaling(max_instance_count=5),
            containers=[run_v2.Container(
                image=image, env=[run_v2.EnvVar(name="GREETING", value=greeting)],
                resources=run_v2.ResourceRequirements(limits={"cpu": "1", "memory": "512Mi"}),
                ports=[run_v2.ContainerPort(container_port=8080)])]))


@pytest.fixture
def run(standin, owner):
    return clients.run_services(endpoint=standin.url, credentials=owner)


def answer(uri: str) -> dict:
    body = http_get(uri + "/", timeout_s=5)
    assert body is not None, f"nothing answers on {uri}"
    return json.loads(body)


def test_deploy_update_and_delete_a_service(run, standin, project):
    parent = f"projects/{project}/locations/{REGION}"
    service = run.create_service(parent=parent, service=service_spec("hello"), service_id="hello-svc").result(timeout=30)
    assert service.uri.startswith("http://127.0.0.1:")
    assert service.terminal_condition.state == run_v2.Condition.State.CONDITION_SUCCEEDED
    first = answer(service.uri)
    assert first["env"]["GREETING"] == "hello" and first["env"]["K_SERVICE"] == "hello-svc"
    assert first["env"]["K_REVISION"].startswith("hello-svc-00001-")
    assert first["env"]["K_CONFIGURATION"] == "hello-svc" and first["env"]["PORT"] == service.uri.rsplit(":", 1)[1]
    assert first["email"] == standin.default_compute_account  # the metadata server names the template's account
    assert first["region"].endswith(f"/regions/{REGION}")

    with pytest.raises(exceptions.Conflict):
        run.create_service(parent=parent, service=service_spec("again"), service_id="hello-svc")

    current = run.get_service(name=service.name)
    current.template.containers[0].env[0].value = "hello again"
    updated = run.update_service(service=current).result(timeout=30)
    second = answer(updated.uri)
    assert updated.uri == service.uri and updated.generation == 2
    assert second["env"]["GREETING"] == "hello again" and second["pid"] != first["pid"]
    assert second["env"]["K_REVISION"].startswith("hello-svc-00002-")
    assert [s.name for s in run.list_services(parent=parent)] == [service.name]

    policy = policy_pb2.Policy(bindings=[policy_pb2.Binding(role="roles/run.invoker", members=["allUsers"])])
    run.set_iam_policy(request={"resource": service.name, "policy": policy})
    assert run.get_iam_policy(request={"resource": service.name}).bindings[0].members == ["allUsers"]

    pid = standin.cloud_run.process_of(service.name).pid
    run.delete_service(name=service.name).result(timeout=30)
    assert not group_alive(pid)
    assert http_get(service.uri + "/", timeout_s=0.5) is None
    with pytest.raises(exceptions.NotFound):
        run.get_service(name=service.name)


def test_a_service_runs_as_its_account_and_reads_secret_env(run, standin, owner, project):
    iam = clients.iam(endpoint=standin.url, credentials=owner)
    account = iam.create_service_account(project, "hello-runner", "runs hello").email
    sm = clients.secret_manager(endpoint=standin.url, credentials=owner)
    secret = sm.create_secret(parent=f"projects/{project}", secret_id="hello-token",
                              secret={"replication": {"automatic": {}}})
    sm.add_secret_version(parent=secret.name, payload={"data": b"s3cret"})
    spec = service_spec("with secret", account=account)
    spec.template.containers[0].env.append(run_v2.EnvVar(name="SECRET_TOKEN", value_source=run_v2.EnvVarSource(
        secret_key_ref=run_v2.SecretKeySelector(secret="hello-token", version="latest"))))
    parent = f"projects/{project}/locations/{REGION}"
    with pytest.raises(exceptions.FailedPrecondition, match="secretmanager.versions.access"):
        run.create_service(parent=parent, service=spec, service_id="secret-svc").result(timeout=30)
    standin.iam.grant(f"projects/{project}/secrets/hello-token", "roles/secretmanager.secretAccessor",
                      f"serviceAccount:{account}")
    current = run.get_service(name=f"{parent}/services/secret-svc")
    current.template = spec.template
    service = run.update_service(service=current).result(timeout=30)
    seen = answer(service.uri)
    assert seen["email"] == account and seen["env"]["SECRET_TOKEN"] == "s3cret"
    run.delete_service(name=service.name).result(timeout=30)


def test_an_image_missing_from_the_table_fails_the_revision(run, project):
    operation = run.create_service(parent=f"projects/{project}/locations/{REGION}",
                                   service=service_spec("x", image="docker.io/nobody/nothing:1"), service_id="no-image")
    with pytest.raises(exceptions.FailedPrecondition, match="Image 'docker.io/nobody/nothing:1' not found"):
        operation.result(timeout=30)
    run.delete_service(name=f"projects/{project}/locations/{REGION}/services/no-image").result(timeout=30)


def test_acting_as_a_missing_or_forbidden_account_is_refused(run, standin, project):
    parent = f"projects/{project}/locations/{REGION}"
    with pytest.raises(exceptions.BadRequest, match="does not exist"):
        run.create_service(parent=parent, service=service_spec("x", account=f"ghost@{project}.iam.gserviceaccount.com"),
                           service_id="ghost-svc")
    member = "user:dev@example.com"
    standin.iam.grant(f"projects/{project}", "roles/run.developer", member)
    as_dev = clients.run_services(endpoint=standin.url, credentials=standin.credentials(member))
    with pytest.raises(exceptions.Forbidden, match="iam.serviceAccounts.actAs") as denied:
        as_dev.create_service(parent=parent, service=service_spec("x"), service_id="dev-svc")
    assert denied.value.reason == "IAM_PERMISSION_DENIED"
