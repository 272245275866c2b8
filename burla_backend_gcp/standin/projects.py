"""The stand-in's one project, as Resource Manager (v3) and Service Usage see it.

Resource Manager: the project itself (`projects/NUMBER`, its id, ACTIVE), its IAM policy and
`testIamPermissions`, which answers the subset of the asked permissions the caller holds.
Service Usage: which APIs are enabled. A call to an API that is not enabled is refused as Google
refuses it (403 `SERVICE_DISABLED`, naming the API and the project), so an installer that forgets
to enable one fails here as it would there. Which APIs start enabled is configurable
(StandInConfig.enabled_services; by default all the stand-in serves).
"""

from __future__ import annotations

import threading
import uuid
from typing import TYPE_CHECKING

from google.cloud import resourcemanager_v3 as crm
from google.cloud import service_usage_v1 as su
from google.cloud.resourcemanager_v3.services.projects.transports.rest_base import _BaseProjectsRestTransport as _P
from google.cloud.service_usage_v1.services.service_usage.transports.rest_base import (
    _BaseServiceUsageRestTransport as _U,
)
from google.iam.v1 import iam_policy_pb2
from google.longrunning import operations_pb2

from .filters import page
from .operations import LongRunningOperations
from .rest import ApiError, Call, Route, invalid, routes_for

if TYPE_CHECKING:
    from . import StandIn

CRM = "cloudresourcemanager.googleapis.com"
SERVICE_USAGE = "serviceusage.googleapis.com"

TITLES = {
    "compute.googleapis.com": "Compute Engine API",
    "run.googleapis.com": "Cloud Run Admin API",
    "secretmanager.googleapis.com": "Secret Manager API",
    "firestore.googleapis.com": "Cloud Firestore API",
    "iam.googleapis.com": "Identity and Access Management (IAM) API",
    "iamcredentials.googleapis.com": "IAM Service Account Credentials API",
    "cloudresourcemanager.googleapis.com": "Cloud Resource Manager API",
    "serviceusage.googleapis.com": "Service Usage API",
    "storage.googleapis.com": "Cloud Storage API",
    "logging.googleapis.com": "Cloud Logging API",
    "artifactregistry.googleapis.com": "Artifact Registry API",
    "cloudbuild.googleapis.com": "Cloud Build API",
}
# Enabled in every new project, as on Google; the rest starts disabled in a "fresh" project.
ALWAYS_ENABLED = ("serviceusage.googleapis.com", "cloudresourcemanager.googleapis.com", "storage.googleapis.com")


class ProjectsApi:
    def __init__(self, standin: "StandIn", enabled: tuple[str, ...] | None):
        self.standin = standin
        self.operations = LongRunningOperations()
        self._lock = threading.Lock()
        self._enabled: set[str] = set(TITLES if enabled is None else (*enabled, *ALWAYS_ENABLED))

    def routes(self) -> list[Route]:
        def p(base, request_type, handler, name: str) -> list[Route]:
            return routes_for(base, request_type, handler, service=CRM, name=name)

        def u(base, request_type, handler, name: str) -> list[Route]:
            return routes_for(base, request_type, handler, service=SERVICE_USAGE, name=name)

        return [
            *p(_P._BaseGetProject, crm.GetProjectRequest, self.get_project, "resourcemanager.projects.get"),
            *p(_P._BaseGetIamPolicy, iam_policy_pb2.GetIamPolicyRequest, self.get_iam_policy,
               "resourcemanager.projects.getIamPolicy"),
            *p(_P._BaseSetIamPolicy, iam_policy_pb2.SetIamPolicyRequest, self.set_iam_policy,
               "resourcemanager.projects.setIamPolicy"),
            *p(_P._BaseTestIamPermissions, iam_policy_pb2.TestIamPermissionsRequest, self.test_iam_permissions,
               "resourcemanager.projects.testIamPermissions"),
            *u(_U._BaseEnableService, su.EnableServiceRequest, self.enable, "serviceusage.services.enable"),
            *u(_U._BaseDisableService, su.DisableServiceRequest, self.disable, "serviceusage.services.disable"),
            *u(_U._BaseBatchEnableServices, su.BatchEnableServicesRequest, self.batch_enable,
               "serviceusage.services.batchEnable"),
            *u(_U._BaseGetService, su.GetServiceRequest, self.get_service, "serviceusage.services.get"),
            *u(_U._BaseBatchGetServices, su.BatchGetServicesRequest, self.batch_get, "serviceusage.services.batchGet"),
            *u(_U._BaseListServices, su.ListServicesRequest, self.list_services, "serviceusage.services.list"),
            *u(_U._BaseGetOperation, operations_pb2.GetOperationRequest, self.get_operation,
               "serviceusage.operations.get"),
        ]

    # ------------------------------------------------------------ Resource Manager

    def _project_resource(self, name: str) -> str:
        """`projects/ID` or `projects/NUMBER` → `projects/ID` (404 for any other project)."""
        key = name.split("/", 1)[-1]
        if key not in (self.standin.project_id, str(self.standin.project_number)):
            raise ApiError(403, f"Permission denied on resource project {key} (or it may not exist).",
                           reason="IAM_PERMISSION_DENIED", domain="cloudresourcemanager.googleapis.com")
        return f"projects/{self.standin.project_id}"

    def get_project(self, call: Call, request: crm.GetProjectRequest) -> crm.Project:
        resource = self._project_resource(request.name)
        self.standin.iam.require(call.member, "resourcemanager.projects.get", resource)
        return crm.Project(name=f"projects/{self.standin.project_number}", project_id=self.standin.project_id,
                           state=crm.Project.State.ACTIVE, display_name=self.standin.project_id,
                           parent="organizations/0", etag='W/"standin"')

    def get_iam_policy(self, call: Call, request):
        resource = self._project_resource(request.resource)
        self.standin.iam.require(call.member, "resourcemanager.projects.getIamPolicy", resource)
        return self.standin.iam.get_policy(resource)

    def set_iam_policy(self, call: Call, request):
        resource = self._project_resource(request.resource)
        self.standin.iam.require(call.member, "resourcemanager.projects.setIamPolicy", resource)
        return self.standin.iam.set_policy(resource, request.policy)

    def test_iam_permissions(self, call: Call, request):
        resource = self._project_resource(request.resource)
        return iam_policy_pb2.TestIamPermissionsResponse(
            permissions=self.standin.iam.allowed(call.member, list(request.permissions), resource))

    # ------------------------------------------------------------ Service Usage

    def require_enabled(self, service: str) -> None:
        with self._lock:
            enabled = service in self._enabled
        if not enabled:
            number = self.standin.project_number
            title = TITLES.get(service, service)
            raise ApiError(
                403, f"{title} has not been used in project {number} before or it is disabled. Enable it by "
                     f"visiting https://console.developers.google.com/apis/api/{service}/overview?project={number} "
                     f"then retry. If you enabled this API recently, wait a few minutes for the action to "
                     f"propagate to our systems and retry.",
                reason="SERVICE_DISABLED", domain="googleapis.com",
                metadata={"service": service, "consumer": f"projects/{number}"})

    def enabled(self) -> set[str]:
        with self._lock:
            return set(self._enabled)

    def _service(self, name: str) -> tuple[str, str]:
        """`projects/P/services/S` → (projects/ID, S), refusing services the stand-in does not know."""
        parent, _, service = name.partition("/services/")
        resource = self._project_resource(parent)
        if service not in TITLES:
            raise ApiError(403, f"Not found or permission denied for service(s): {service}.",
                           reason="SERVICE_CONFIG_NOT_FOUND_OR_PERMISSION_DENIED", domain="serviceusage.googleapis.com",
                           metadata={"services": service})
        return resource, service

    def _message(self, service: str) -> su.Service:
        with self._lock:
            state = su.State.ENABLED if service in self._enabled else su.State.DISABLED
        return su.Service(name=f"projects/{self.standin.project_number}/services/{service}",
                          parent=f"projects/{self.standin.project_number}", state=state,
                          config=su.ServiceConfig(name=service, title=TITLES[service]))

    def _set(self, call: Call, services: list[str], parent: str, enable: bool):
        self.standin.iam.require(call.member, "serviceusage.services.enable" if enable else
                                 "serviceusage.services.disable", parent)
        with self._lock:
            (self._enabled.update if enable else self._enabled.difference_update)(services)

    def enable(self, call: Call, request: su.EnableServiceRequest):
        resource, service = self._service(request.name)
        self._set(call, [service], resource, True)
        return self.operations.done_now(_operation_name(),
                                        su.EnableServiceResponse(service=self._message(service)))

    def disable(self, call: Call, request: su.DisableServiceRequest):
        resource, service = self._service(request.name)
        self._set(call, [service], resource, False)
        return self.operations.done_now(_operation_name(),
                                        su.DisableServiceResponse(service=self._message(service)))

    def batch_enable(self, call: Call, request: su.BatchEnableServicesRequest):
        if not request.service_ids or len(request.service_ids) > 20:
            raise invalid("service_ids must name between 1 and 20 services.")
        names = [self._service(f"{request.parent}/services/{s}") for s in request.service_ids]
        self._set(call, [s for _, s in names], names[0][0], True)
        return self.operations.done_now(
            _operation_name(),
            su.BatchEnableServicesResponse(services=[self._message(s) for _, s in names]))

    def get_service(self, call: Call, request: su.GetServiceRequest) -> su.Service:
        resource, service = self._service(request.name)
        self.standin.iam.require(call.member, "serviceusage.services.get", resource)
        return self._message(service)

    def batch_get(self, call: Call, request: su.BatchGetServicesRequest) -> su.BatchGetServicesResponse:
        names = [self._service(n) for n in request.names]
        if names:
            self.standin.iam.require(call.member, "serviceusage.services.get", names[0][0])
        return su.BatchGetServicesResponse(services=[self._message(s) for _, s in names])

    def list_services(self, call: Call, request: su.ListServicesRequest) -> su.ListServicesResponse:
        resource = self._project_resource(request.parent)
        self.standin.iam.require(call.member, "serviceusage.services.list", resource)
        services = [self._message(s) for s in sorted(TITLES)]
        if request.filter:
            if request.filter.replace(" ", "") != "state:ENABLED":
                raise invalid(f"Invalid filter {request.filter!r}: only 'state:ENABLED' is supported.")
            services = [s for s in services if s.state == su.State.ENABLED]
        chosen, token = page(services, request.page_size, request.page_token, default_size=50)
        return su.ListServicesResponse(services=chosen, next_page_token=token)

    def get_operation(self, call: Call, request):
        return self.operations.get(request.name)



def _operation_name() -> str:
    """Service Usage names its operations `operations/ID` (one segment), not under a resource."""
    return f"operations/acf.p2-{uuid.uuid4().hex[:12]}"
