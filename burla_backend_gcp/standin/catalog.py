"""Compute Engine's catalogue in the stand-in: machine types and zones (get, list), answered from
machines.py: every machine type is offered in every zone."""

from __future__ import annotations

from typing import TYPE_CHECKING

from google.cloud import compute_v1
from google.cloud.compute_v1.services.machine_types.transports.rest_base import _BaseMachineTypesRestTransport as _M
from google.cloud.compute_v1.services.zones.transports.rest_base import _BaseZonesRestTransport as _ZN

from .compute import LINK, SERVICE
from .filters import matches_filter, page
from .machines import MACHINE_TYPES, ZONES, known_zone, region_of
from .rest import Call, Route, make_route, not_found, rule_of

if TYPE_CHECKING:
    from . import StandIn


class CatalogApi:
    def __init__(self, standin: "StandIn"):
        self.standin = standin

    def routes(self) -> list[Route]:
        def r(base, request_type, handler, name: str) -> Route:
            return make_route(rule_of(base), request_type, handler, service=SERVICE, name=name)

        c = compute_v1
        return [
            r(_M._BaseGet, c.GetMachineTypeRequest, self.get_machine_type, "compute.machineTypes.get"),
            r(_M._BaseList, c.ListMachineTypesRequest, self.list_machine_types, "compute.machineTypes.list"),
            r(_ZN._BaseGet, c.GetZoneRequest, self.get_zone, "compute.zones.get"),
            r(_ZN._BaseList, c.ListZonesRequest, self.list_zones, "compute.zones.list"),
        ]

    def _project(self, call: Call, project: str, permission: str) -> None:
        self.standin.check_project(project)
        self.standin.iam.require(call.member, permission, f"projects/{project}")

    def _zone(self, zone: str) -> None:
        if not known_zone(zone):
            raise not_found(f"projects/{self.standin.project_id}/zones/{zone}")

    def _machine_type_message(self, project: str, zone: str, name: str) -> compute_v1.MachineType:
        machine = MACHINE_TYPES[name]
        message = compute_v1.MachineType(
            name=name, guest_cpus=machine.cpus, memory_mb=machine.memory_mb, zone=zone, kind="compute#machineType",
            description=f"{machine.cpus} vCPUs, {machine.memory_mb / 1024:g} GB RAM", is_shared_cpu=name in (
                "e2-micro", "e2-small", "e2-medium"), maximum_persistent_disks=128,
            self_link=f"{LINK}/projects/{project}/zones/{zone}/machineTypes/{name}",
        )
        if machine.gpus:
            message.accelerators = [compute_v1.Accelerators(guest_accelerator_type=machine.accelerator,
                                                            guest_accelerator_count=machine.gpus)]
        return message

    def get_machine_type(self, call: Call, request) -> compute_v1.MachineType:
        self._project(call, request.project, "compute.machineTypes.get")
        self._zone(request.zone)
        if request.machine_type not in MACHINE_TYPES:
            raise not_found(f"projects/{request.project}/zones/{request.zone}/machineTypes/{request.machine_type}")
        return self._machine_type_message(request.project, request.zone, request.machine_type)

    def list_machine_types(self, call: Call, request) -> compute_v1.MachineTypeList:
        self._project(call, request.project, "compute.machineTypes.list")
        self._zone(request.zone)
        items = [self._machine_type_message(request.project, request.zone, n) for n in MACHINE_TYPES]
        items = [i for i in items if matches_filter(i, request.filter)]
        chosen, token = page(items, request.max_results, request.page_token)
        return compute_v1.MachineTypeList(items=chosen, next_page_token=token, kind="compute#machineTypeList")

    def _zone_message(self, project: str, zone: str) -> compute_v1.Zone:
        region = region_of(zone)
        return compute_v1.Zone(name=zone, status="UP", kind="compute#zone",
                               region=f"{LINK}/projects/{project}/regions/{region}",
                               self_link=f"{LINK}/projects/{project}/zones/{zone}")

    def get_zone(self, call: Call, request) -> compute_v1.Zone:
        self._project(call, request.project, "compute.zones.get")
        self._zone(request.zone)
        return self._zone_message(request.project, request.zone)

    def list_zones(self, call: Call, request) -> compute_v1.ZoneList:
        self._project(call, request.project, "compute.zones.list")
        items = [self._zone_message(request.project, f"{region}-{letter}")
                 for region, letters in ZONES.items() for letter in letters]
        items = [i for i in items if matches_filter(i, request.filter)]
        chosen, token = page(items, request.max_results, request.page_token)
        return compute_v1.ZoneList(items=chosen, next_page_token=token, kind="compute#zoneList")
