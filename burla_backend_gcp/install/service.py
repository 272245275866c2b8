"""Steps: the cluster service on Cloud Run — its code in the bucket, the service itself, and
public access to it (the service authenticates every request on its own: auth.py).

    code archive (code.py) ──► gs://BUCKET/service/burla-open-VERSION-SHA.zip   once per version
    Cloud Run service burla-cluster: python:3.12-slim running bootstrap.py as the burla-cluster
      account, configured by environment variables (service/settings.py reads them)
    run.invoker for allUsers: the dashboard and the API are reachable from the user's browser
      and computers; without a burla token or session nothing but the sign-in pages answers

A deployed service carries the label `burla-spec`: a digest of everything install sets on it.
A second install computes the same digest for the same version and leaves the service alone;
a new version (new code, new settings) changes the digest and rolls out a new revision.
"""

from __future__ import annotations

import hashlib
import json
import re
from importlib import resources
from typing import TYPE_CHECKING

from .. import schema
from .code import CodeArchive, build_archive, service_requirements
from .steps import CREATE, NONE, UPDATE, Change, Step

if TYPE_CHECKING:
    from .context import InstallContext

SERVICE_IMAGE = "python:3.12-slim"  # Docker Hub's; Cloud Run pulls it, nothing of ours to host
SPEC_LABEL = "burla-spec"
VERSION_LABEL = "burla-version"
DEPLOY_TIMEOUT_S = 900.0
REQUEST_TIMEOUT_S = 3600  # long polls for joining nodes stay open
MAX_INSTANCES = 4  # state is in Firestore: instances are interchangeable
INVOKER = ("roles/run.invoker", "allUsers")


def bootstrap_source() -> str:
    return resources.files(__package__).joinpath("bootstrap.py").read_text(encoding="utf-8")


class ServiceCode(Step):
    """Upload this version's code archive (once)."""

    label = "service code"

    def __init__(self) -> None:
        self._archive: CodeArchive | None = None

    @property
    def archive(self) -> CodeArchive:
        if self._archive is None:
            self._archive = build_archive()
        return self._archive

    def plan(self, ctx: "InstallContext") -> Change:
        where = f"gs://{ctx.names.bucket}/{self.archive.object_name}"
        size = f"{len(self.archive.data) / 1e6:.1f} MB"
        if ctx.storage().bucket(ctx.names.bucket).blob(self.archive.object_name).exists():
            return Change(NONE, where)
        return Change("upload", f"{where} ({size})")

    def apply(self, ctx: "InstallContext", change: Change) -> str:
        blob = ctx.storage().bucket(ctx.names.bucket).blob(self.archive.object_name)
        blob.upload_from_string(self.archive.data, content_type="application/zip")
        return change.detail


def desired_service(ctx: "InstallContext", archive: CodeArchive, image: str = SERVICE_IMAGE):
    """The Cloud Run service install deploys, labelled with a digest of itself."""
    from google.cloud import run_v2

    names = ctx.names
    env = {
        "BURLA_PROJECT": ctx.project,
        "BURLA_REGION": ctx.region,
        "BURLA_DATABASE": schema.DATABASE,
        "BURLA_BUCKET": names.bucket,
        "BURLA_NODE_SERVICE_ACCOUNT": names.node_account,
        "BURLA_CODE_URI": f"gs://{names.bucket}/{archive.object_name}",
        "BURLA_CODE_SHA256": archive.sha256,
        "BURLA_REQUIREMENTS": json.dumps(service_requirements()),
        "BURLA_VERSION": archive.version,
    }
    container = run_v2.Container(
        image=image, command=["python", "-c", bootstrap_source()],
        env=[run_v2.EnvVar(name=k, value=v) for k, v in sorted(env.items())],
        resources=run_v2.ResourceRequirements(limits={"cpu": "1", "memory": "1Gi"}),
        ports=[run_v2.ContainerPort(container_port=8080)])
    template = run_v2.RevisionTemplate(
        service_account=names.cluster_account, containers=[container],
        scaling=run_v2.RevisionScaling(min_instance_count=0, max_instance_count=MAX_INSTANCES),
        timeout={"seconds": REQUEST_TIMEOUT_S})
    service = run_v2.Service(ingress=run_v2.IngressTraffic.INGRESS_TRAFFIC_ALL, template=template,
                             description="Burla cluster service: API, dashboard and sign-in.")
    digest = hashlib.sha256(run_v2.Service.to_json(service, sort_keys=True).encode()).hexdigest()[:32]
    service.labels = {SPEC_LABEL: digest, VERSION_LABEL: re.sub(r"[^a-z0-9_-]", "-", archive.version.lower()),
                      "burla": "cluster"}
    return service


class CloudRunService(Step):
    label = "Cloud Run service"

    def __init__(self, code: ServiceCode, image: str = SERVICE_IMAGE) -> None:
        self.code = code
        self.image = image

    def plan(self, ctx: "InstallContext") -> Change:
        from google.api_core import exceptions

        wanted = desired_service(ctx, self.code.archive, self.image)
        what = f"{schema.SERVICE_NAME} in {ctx.region}, version {self.code.archive.version}"
        try:
            current = ctx.run_services().get_service(name=ctx.names.service)
        except exceptions.NotFound:
            return Change("deploy", what, wanted)
        ready = current.terminal_condition.state == current.terminal_condition.State.CONDITION_SUCCEEDED
        if current.labels.get(SPEC_LABEL) == wanted.labels[SPEC_LABEL] and ready:
            return Change(NONE, f"{what} at {current.uri}")
        return Change(UPDATE, what, wanted)

    def apply(self, ctx: "InstallContext", change: Change) -> str:
        from google.api_core import exceptions

        client = ctx.run_services()
        service = change.found
        if change.action == "deploy":
            try:
                operation = client.create_service(parent=ctx.names.location, service=service,
                                                  service_id=schema.SERVICE_NAME)
            except exceptions.Conflict:  # deployed by an interrupted run
                service.name = ctx.names.service
                operation = client.update_service(service=service)
        else:
            service.name = ctx.names.service
            operation = client.update_service(service=service)
        deployed = operation.result(timeout=DEPLOY_TIMEOUT_S)
        return f"{change.detail} at {deployed.uri}"


class PublicAccess(Step):
    label = "public access"

    def plan(self, ctx: "InstallContext") -> Change:
        from google.api_core import exceptions

        role, member = INVOKER
        try:
            policy = ctx.run_services().get_iam_policy(request={"resource": ctx.names.service})
        except exceptions.NotFound:
            return Change("grant", f"{role.removeprefix('roles/')} to {member}")
        if any(b.role == role and member in b.members for b in policy.bindings):
            return Change(NONE, f"{role.removeprefix('roles/')} for {member} (the service checks every request)")
        return Change("grant", f"{role.removeprefix('roles/')} to {member} (the service checks every request)")

    def apply(self, ctx: "InstallContext", change: Change) -> str:
        from google.api_core import exceptions

        from .accounts import update_policy

        client = ctx.run_services()
        resource = ctx.names.service
        role, member = INVOKER
        try:
            update_policy(lambda: client.get_iam_policy(request={"resource": resource}),
                          lambda policy: client.set_iam_policy(request={"resource": resource, "policy": policy}),
                          {role: {member}})
        except (exceptions.BadRequest, exceptions.FailedPrecondition) as error:
            raise exceptions.FailedPrecondition(
                f"{error.message} (an organization policy such as Domain Restricted Sharing may forbid allUsers; "
                f"ask an organization admin to allow it for project {ctx.project})") from None
        return change.detail


def cluster_url(ctx: "InstallContext") -> str:
    return ctx.run_services().get_service(name=ctx.names.service).uri
