"""Cloud Run (v2 services) in the stand-in: a deployed service is a local process.

    create / update ─► a revision (NAME-0000G-xxx) ─► the image is looked up in the image table
      ─► its command runs in its own process group with PORT, K_SERVICE, K_REVISION,
         K_CONFIGURATION, the container's env (secrets resolved as the service's account), and
         a metadata server whose identity is the template's service account
      ─► ready when the port accepts connections ─► the operation is done, `uri` set
    update ─► a new revision: the old process stops, the new one starts on the same port
    delete ─► the process group is killed

The image table (StandInConfig.run_images) maps an image (an exact name or an fnmatch pattern)
to the local command that plays its ENTRYPOINT; `container.command` replaces it and
`container.args` are appended, as on Cloud Run; `python`/`python3` mean this Python. An image
not in the table fails the revision the way a missing image does. The URL is
http://127.0.0.1:PORT; requests to it do not pass through the stand-in, so `run.routes.invoke`
is not enforced there.
"""

from __future__ import annotations

import fnmatch
import random
import re
import socket
import string
import sys
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from google.cloud import run_v2
from google.cloud.run_v2.services.services.transports.rest_base import _BaseServicesRestTransport as _S
from google.iam.v1 import iam_policy_pb2
from google.longrunning import operations_pb2
from google.protobuf import timestamp_pb2
from google.rpc import code_pb2

from .metadata import MetadataIdentity
from .operations import LongRunningOperations
from .processes import local_environment
from .rest import ApiError, Call, Route, invalid, routes_for

if TYPE_CHECKING:
    import subprocess

    from . import StandIn
    from .metadata import MetadataServer

SERVICE = "run.googleapis.com"
_SERVICE_ID = re.compile(r"^[a-z]([-a-z0-9]{0,47}[a-z0-9])?$")


@dataclass
class Deployment:
    service: run_v2.Service
    port: int
    directory: Path
    process: "subprocess.Popen | None" = None
    metadata: "MetadataServer | None" = None
    deleted: bool = False


def _timestamp() -> timestamp_pb2.Timestamp:
    stamp = timestamp_pb2.Timestamp()
    stamp.GetCurrentTime()
    return stamp


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class CloudRunApi:
    def __init__(self, standin: "StandIn"):
        self.standin = standin
        self.operations = LongRunningOperations()
        self._lock = threading.Lock()
        self._deployments: dict[str, Deployment] = {}

    def routes(self) -> list[Route]:
        def r(base, request_type, handler, name: str) -> list[Route]:
            return routes_for(base, request_type, handler, service=SERVICE, name=name)

        return [
            *r(_S._BaseCreateService, run_v2.CreateServiceRequest, self.create, "run.services.create"),
            *r(_S._BaseGetService, run_v2.GetServiceRequest, self.get, "run.services.get"),
            *r(_S._BaseListServices, run_v2.ListServicesRequest, self.list, "run.services.list"),
            *r(_S._BaseUpdateService, run_v2.UpdateServiceRequest, self.update, "run.services.update"),
            *r(_S._BaseDeleteService, run_v2.DeleteServiceRequest, self.delete, "run.services.delete"),
            *r(_S._BaseGetIamPolicy, iam_policy_pb2.GetIamPolicyRequest, self.get_iam_policy, "run.services.getIamPolicy"),
            *r(_S._BaseSetIamPolicy, iam_policy_pb2.SetIamPolicyRequest, self.set_iam_policy, "run.services.setIamPolicy"),
            *r(_S._BaseTestIamPermissions, iam_policy_pb2.TestIamPermissionsRequest, self.test_iam_permissions,
               "run.services.testIamPermissions"),
            *r(_S._BaseGetOperation, operations_pb2.GetOperationRequest, self.get_operation, "run.operations.get"),
            *r(_S._BaseWaitOperation, operations_pb2.WaitOperationRequest, self.wait_operation, "run.operations.wait"),
            *r(_S._BaseListOperations, operations_pb2.ListOperationsRequest, self.list_operations, "run.operations.list"),
            *r(_S._BaseDeleteOperation, operations_pb2.DeleteOperationRequest, self.delete_operation,
               "run.operations.delete"),
        ]

    # ------------------------------------------------------------ helpers

    def _check(self, call: Call, name: str, permission: str) -> str:
        """Checks the project of a `projects/P/locations/L…` name and the permission; returns L."""
        match = re.match(r"^projects/([^/]+)/locations/([^/]+)", name)
        if not match:
            raise invalid(f"Invalid resource name {name!r}.")
        self.standin.check_project(match.group(1))
        self.standin.iam.require(call.member, permission, name)
        return match.group(2)

    def _deployment(self, name: str) -> Deployment:
        with self._lock:
            deployment = self._deployments.get(name)
        if deployment is None or deployment.deleted:
            raise ApiError(404, f"Resource '{name.rsplit('/', 1)[-1]}' of kind 'SERVICE' in region "
                                f"'{name.split('/')[3]}' in project '{name.split('/')[1]}' does not exist.")
        return deployment

    def _account(self, call: Call, service: run_v2.Service) -> str:
        account = service.template.service_account or self.standin.default_compute_account
        self.standin.iam_admin.require_account(account)
        self.standin.iam.require(call.member, "iam.serviceAccounts.actAs",
                                 f"projects/{self.standin.project_id}/serviceAccounts/{account}")
        return account

    def _command(self, container: run_v2.Container) -> list[str]:
        table = self.standin.config.run_images
        entry = table.get(container.image)
        if entry is None:
            entry = next((v for k, v in table.items() if fnmatch.fnmatchcase(container.image, k)), None)
        if entry is None:
            raise LookupError(f"Image '{container.image}' not found.")
        argv = list(container.command) or list(entry)
        argv += list(container.args)
        if argv and argv[0] in ("python", "python3"):
            argv[0] = sys.executable
        return argv

    def _environment(self, deployment: Deployment, container: run_v2.Container, revision: str) -> dict[str, str]:
        service = deployment.service
        service_id = service.name.rsplit("/", 1)[-1]
        env = local_environment(self.standin.child_environment())
        env.update(deployment.metadata.environment())
        for variable in container.env:
            if variable.value_source.secret_key_ref.secret:
                ref = variable.value_source.secret_key_ref
                env[variable.name] = self.standin.secrets.access_as(
                    f"serviceAccount:{service.template.service_account or self.standin.default_compute_account}",
                    ref.secret, ref.version or "latest")
            else:
                env[variable.name] = variable.value
        env.update({"PORT": str(deployment.port), "K_SERVICE": service_id, "K_REVISION": revision,
                    "K_CONFIGURATION": service_id})
        return env

    # ------------------------------------------------------------ deploying

    def _roll_out(self, deployment: Deployment, operation: str) -> None:
        """Start the service's newest revision; finish the operation when it listens (or fails)."""
        service = deployment.service
        revision = (f"{service.name.rsplit('/', 1)[-1]}-{service.generation:05d}-"
                    f"{''.join(random.choices(string.ascii_lowercase, k=3))}")
        service.latest_created_revision = f"{service.name.rsplit('/', 1)[-1]}/revisions/{revision}"
        processes = self.standin.processes
        if deployment.process is not None:
            processes.stop(deployment.process, grace_s=self.standin.config.stop_grace_s)
            deployment.process = None
        container = service.template.containers[0]
        try:
            argv = self._command(container)
            env = self._environment(deployment, container, revision)
        except (LookupError, ApiError) as exc:
            self._failed(deployment, operation, revision, str(exc))
            return
        deployment.process = processes.spawn(argv, cwd=deployment.directory, env=env,
                                             log_path=deployment.directory / f"{revision}.log")
        deadline = time.monotonic() + self.standin.config.run_start_timeout_s
        while time.monotonic() < deadline and not deployment.deleted:
            if deployment.process.poll() is not None:
                break
            try:
                with socket.create_connection(("127.0.0.1", deployment.port), timeout=0.5):
                    self._ready(deployment, operation, revision)
                    return
            except OSError:
                time.sleep(0.02)
        self._failed(deployment, operation, revision,
                     f"Revision '{revision}' is not ready and cannot serve traffic. The user-provided container "
                     f"failed to start and listen on the port defined provided by the PORT={deployment.port} "
                     f"environment variable within the allocated timeout. Logs: "
                     f"{deployment.directory / (revision + '.log')}")

    def _ready(self, deployment: Deployment, operation: str, revision: str) -> None:
        with self._lock:
            service = deployment.service
            service.latest_ready_revision = service.latest_created_revision
            service.observed_generation = service.generation
            service.uri = f"http://127.0.0.1:{deployment.port}"
            service.urls = [service.uri]
            service.reconciling = False
            service.terminal_condition = run_v2.Condition(type_="Ready", state=run_v2.Condition.State.CONDITION_SUCCEEDED,
                                                          last_transition_time=_timestamp())
            service.traffic_statuses = [run_v2.TrafficTargetStatus(
                type_=run_v2.TrafficTargetAllocationType.TRAFFIC_TARGET_ALLOCATION_TYPE_LATEST, percent=100)]
            snapshot = run_v2.Service(service)
        self.operations.succeed(operation, snapshot)

    def _failed(self, deployment: Deployment, operation: str, revision: str, message: str) -> None:
        with self._lock:
            service = deployment.service
            service.observed_generation = service.generation
            service.reconciling = False
            service.terminal_condition = run_v2.Condition(type_="Ready", state=run_v2.Condition.State.CONDITION_FAILED,
                                                          message=message, last_transition_time=_timestamp())
        self.operations.fail(operation, code_pb2.FAILED_PRECONDITION, message)

    # ------------------------------------------------------------ services

    def create(self, call: Call, request: run_v2.CreateServiceRequest) -> operations_pb2.Operation:
        location = self._check(call, request.parent, "run.services.create")
        if not _SERVICE_ID.match(request.service_id):
            raise invalid(f"service_id must match {_SERVICE_ID.pattern}; got {request.service_id!r}.")
        service = run_v2.Service(request.service)
        if not service.template.containers or not service.template.containers[0].image:
            raise invalid("spec.template.spec.containers[0].image: Required value.")
        name = f"{request.parent}/services/{request.service_id}"
        account = self._account(call, service)
        now = _timestamp()
        service.name = name
        service.uid = str(uuid.uuid4())
        service.generation = 1
        service.create_time = now
        service.update_time = now
        service.creator = service.last_modifier = call.member.split(":", 1)[-1]
        service.etag = f'"{uuid.uuid4().hex[:12]}"'
        service.reconciling = True
        service.template.service_account = account
        with self._lock:
            existing = self._deployments.get(name)
            if existing is not None and not existing.deleted:
                raise ApiError(409, f"Resource '{request.service_id}' already exists.", status="ALREADY_EXISTS")
            directory = Path(self.standin.root) / "run" / f"{request.service_id}-{service.uid[:8]}"
            directory.mkdir(parents=True)
            deployment = Deployment(service, _free_port(), directory)
            self._deployments[name] = deployment
        deployment.metadata = self.standin.metadata_server(MetadataIdentity(
            project_id=self.standin.project_id, project_number=self.standin.project_number,
            service_account=account, instance_id=random.getrandbits(63), name=request.service_id, region=location))
        op = self.operations.start(self.operations.new_name(f"projects/{self.standin.project_id}/locations/{location}"),
                                   run_v2.Service(service))
        if request.validate_only:
            self._drop(name)
            self.operations.succeed(op.name, run_v2.Service(service))
            return self.operations.get(op.name)
        threading.Thread(target=self._roll_out, args=(deployment, op.name), daemon=True).start()
        return op

    def get(self, call: Call, request: run_v2.GetServiceRequest) -> run_v2.Service:
        self._check(call, request.name, "run.services.get")
        deployment = self._deployment(request.name)
        with self._lock:
            return run_v2.Service(deployment.service)

    def list(self, call: Call, request: run_v2.ListServicesRequest) -> run_v2.ListServicesResponse:
        self._check(call, request.parent, "run.services.list")
        with self._lock:
            services = [run_v2.Service(d.service) for n, d in sorted(self._deployments.items())
                        if n.startswith(request.parent + "/") and not d.deleted]
        return run_v2.ListServicesResponse(services=services)

    def update(self, call: Call, request: run_v2.UpdateServiceRequest) -> operations_pb2.Operation:
        name = request.service.name
        location = self._check(call, name, "run.services.update")
        with self._lock:
            exists = name in self._deployments and not self._deployments[name].deleted
        if not exists:
            if request.allow_missing:
                parent, _, service_id = name.rpartition("/services/")
                return self.create(call, run_v2.CreateServiceRequest(parent=parent, service_id=service_id,
                                                                     service=request.service))
            self._deployment(name)
        deployment = self._deployment(name)
        replacement = run_v2.Service(request.service)
        if not replacement.template.containers or not replacement.template.containers[0].image:
            raise invalid("spec.template.spec.containers[0].image: Required value.")
        account = self._account(call, replacement)
        with self._lock:
            current = deployment.service
            for kept in ("name", "uid", "create_time", "creator", "uri", "urls", "latest_ready_revision",
                         "latest_created_revision", "observed_generation", "traffic_statuses"):
                setattr(replacement, kept, getattr(current, kept))
            replacement.generation = current.generation + 1
            replacement.update_time = _timestamp()
            replacement.last_modifier = call.member.split(":", 1)[-1]
            replacement.etag = f'"{uuid.uuid4().hex[:12]}"'
            replacement.reconciling = True
            replacement.template.service_account = account
            deployment.service = replacement
            snapshot = run_v2.Service(replacement)
        deployment.metadata.identity.service_account = account
        op = self.operations.start(self.operations.new_name(f"projects/{self.standin.project_id}/locations/{location}"),
                                   snapshot)
        threading.Thread(target=self._roll_out, args=(deployment, op.name), daemon=True).start()
        return op

    def _drop(self, name: str) -> Deployment | None:
        with self._lock:
            deployment = self._deployments.pop(name, None)
        if deployment is None:
            return None
        deployment.deleted = True
        if deployment.process is not None:
            self.standin.processes.stop(deployment.process, grace_s=self.standin.config.stop_grace_s)
        if deployment.metadata is not None:
            deployment.metadata.close()
        self.standin.iam.drop_policy(name)
        return deployment

    def delete(self, call: Call, request: run_v2.DeleteServiceRequest) -> operations_pb2.Operation:
        location = self._check(call, request.name, "run.services.delete")
        deployment = self._deployment(request.name)
        with self._lock:
            snapshot = run_v2.Service(deployment.service)
        self._drop(request.name)
        snapshot.delete_time = _timestamp()
        return self.operations.done_now(
            self.operations.new_name(f"projects/{self.standin.project_id}/locations/{location}"), snapshot)

    def process_of(self, service_name: str) -> "subprocess.Popen | None":
        """The process running the service's current revision (for tests)."""
        return self._deployment(service_name).process

    # ------------------------------------------------------------ IAM

    def get_iam_policy(self, call: Call, request):
        self._check(call, request.resource, "run.services.getIamPolicy")
        self._deployment(request.resource)
        return self.standin.iam.get_policy(request.resource)

    def set_iam_policy(self, call: Call, request):
        self._check(call, request.resource, "run.services.setIamPolicy")
        self._deployment(request.resource)
        return self.standin.iam.set_policy(request.resource, request.policy)

    def test_iam_permissions(self, call: Call, request):
        self._check(call, request.resource, "run.services.get")
        self._deployment(request.resource)
        allowed = self.standin.iam.allowed(call.member, list(request.permissions), request.resource)
        return iam_policy_pb2.TestIamPermissionsResponse(permissions=allowed)

    # ------------------------------------------------------------ operations

    def get_operation(self, call: Call, request):
        self._check(call, request.name, "run.operations.get")
        return self.operations.get(request.name)

    def wait_operation(self, call: Call, request):
        self._check(call, request.name, "run.operations.get")
        timeout = request.timeout.seconds + request.timeout.nanos / 1e9 if request.HasField("timeout") else 60.0
        return self.operations.wait(request.name, min(timeout, 120.0))

    def list_operations(self, call: Call, request):
        self._check(call, request.name, "run.operations.list")
        return operations_pb2.ListOperationsResponse(operations=self.operations.list(request.name))

    def delete_operation(self, call: Call, request):
        self._check(call, request.name, "run.operations.delete")
        self.operations.delete(request.name)
        from google.protobuf import empty_pb2

        return empty_pb2.Empty()

    def close(self) -> None:
        with self._lock:
            names = list(self._deployments)
        for name in names:
            self._drop(name)
