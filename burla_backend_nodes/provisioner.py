"""The machines of the `nodes` backend: a fixed list of node agents, asked for their health at
the start of every call."""

from __future__ import annotations

import sys

from burla_core.errors import NoCompatibleNodes, NodeDisconnected, UnauthorizedError, VersionMismatch
from burla_core.interfaces import Provisioner
from burla_core.node.capacity import NodeCapacity
from burla_core.node.client import NodeUnreachable, gather_blocking, node_client
from burla_core.node.protocol import burla_version, python_version, version_mismatch
from burla_core.types import GpuInfo, NodeInfo, ResourceRequest

from .settings import NodesSettings

HEALTH_SECONDS = 5.0


def capacity_from_health(report: dict) -> NodeCapacity:
    gpus = [
        GpuInfo(index=int(g["index"]), name=str(g["name"]), family=str(g.get("family", "")), memory_gb=float(g.get("memory_gb", 0)))
        for g in report.get("gpus", [])
    ]
    return NodeCapacity(cpus=int(report["cpus"]), ram_gb=float(report["ram_gb"]), gpus=gpus, image=report.get("image"))


def describe_node(url: str, capacity: NodeCapacity) -> str:
    gpus = ", ".join(g.name for g in capacity.gpus) or "no GPU"
    return f"{url} has {capacity.cpus} CPUs, {capacity.ram_gb:.1f} GB RAM, {gpus}, image {capacity.image!r}"


class NodesProvisioner(Provisioner):
    def __init__(self, options: dict | None = None) -> None:
        super().__init__(options)
        self.settings = NodesSettings.from_options(self.options)

    def health_reports(self, urls: list[str]) -> list[tuple[str, int | None, object]]:
        http = self.settings.http
        timeout = float(self.options.get("health_timeout") or HEALTH_SECONDS)

        async def ask(url: str):
            try:
                status, answer, _ = await node_client(url, http.token, http.ca_file, http.ca_pem).call("GET", "/health", timeout=timeout)
            except NodeUnreachable as error:
                return url, None, str(error)
            return url, status, answer

        return gather_blocking([ask(url) for url in urls], timeout=timeout + 10)

    def eligible_nodes(self, request: ResourceRequest) -> list[NodeInfo]:
        unreachable: list[str] = []
        refused: list[str] = []
        images: set[str | None] = set()
        nodes: list[NodeInfo] = []
        for url, status, answer in self.health_reports(self.settings.urls):
            if status is None:
                unreachable.append(f"{url} ({answer})")
                continue
            if status == 401:
                raise UnauthorizedError(f"node {url} refused the token: use the token its agent was started with (BURLA_NODE_TOKEN)")
            if status != 200:
                unreachable.append(f"{url} (answered {status}: {answer.get('message', answer)})")
                continue
            mismatch = version_mismatch(python_version(), burla_version(), str(answer.get("python")), str(answer.get("burla")))
            if mismatch:
                raise VersionMismatch(f"node {url}: {mismatch}")
            capacity = capacity_from_health(answer)
            images.add(capacity.image)
            slots = capacity.max_slots(request.func_cpu, request.func_ram, request.func_gpu)
            if (request.image is not None and capacity.image != request.image) or slots < 1:
                refused.append(describe_node(url, capacity))
                continue
            nodes.append(
                NodeInfo(
                    node_id=url, cpus=capacity.cpus, ram_gb=capacity.ram_gb, gpus=capacity.gpus,
                    image=capacity.image, address=url, slots=slots,
                )
            )
        if not nodes:
            if refused:
                hint = ""
                if request.image is not None and request.image not in images:
                    listed = ", ".join(repr(image) for image in sorted(images, key=str))
                    hint = (f" No node runs image {request.image!r} (the nodes run: {listed}); start an agent "
                            f"with `burla node start --image {request.image}` inside that image.")
                raise NoCompatibleNodes(
                    f"no node can run {request.describe()}: " + "; ".join(refused)
                    + ("; and these did not answer: " + "; ".join(unreachable) if unreachable else "") + "." + hint
                )
            raise NodeDisconnected("none of the nodes answered: " + "; ".join(unreachable))
        if unreachable:
            print(
                f"burla: {len(unreachable)} node(s) did not answer and are left out of this job: " + "; ".join(unreachable),
                file=sys.stderr,
            )
        return nodes
