"""The machines of the `nodes` backend: a fixed list of node agents, asked for their health at
the start of every call."""

from __future__ import annotations

import asyncio
import os
import sys
from typing import Any

from burla_core.errors import NoCompatibleNodes, NodeDisconnected, UnauthorizedError, VersionMismatch
from burla_core.gpus import describe_func_gpu
from burla_core.interfaces import Provisioner
from burla_core.node.client import NODES_ENV, NodeUnreachable, loop_thread, node_client, parse_node_list, transport_settings
from burla_core.node.jobs import NodeCapacity
from burla_core.node.protocol import burla_version, python_version, version_mismatch
from burla_core.types import GpuInfo, NodeInfo, ResourceRequest

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
    def node_urls(self) -> list[str]:
        urls = parse_node_list(self.options.get("nodes") or os.environ.get(NODES_ENV))
        if not urls:
            raise NoCompatibleNodes(
                f"the nodes backend has no nodes: set {NODES_ENV}=http://host:8701,... (each running "
                "`burla node start`) or pass backend_options={'nodes': [...]}"
            )
        return urls

    def health_reports(self, urls: list[str]) -> list[tuple[str, int | None, Any]]:
        token, ca_file, _ = transport_settings(self.options)
        timeout = float(self.options.get("health_timeout") or HEALTH_SECONDS)

        async def ask(url: str):
            try:
                status, answer, _ = await node_client(url, token, ca_file).call("GET", "/health", timeout=timeout)
            except NodeUnreachable as error:
                return url, None, str(error)
            return url, status, answer

        async def ask_all():
            return await asyncio.gather(*(ask(url) for url in urls))

        return loop_thread().run(ask_all(), timeout=timeout + 10)

    def eligible_nodes(self, request: ResourceRequest) -> list[NodeInfo]:
        urls = self.node_urls()
        unreachable: list[str] = []
        refused: list[str] = []
        nodes: list[NodeInfo] = []
        for url, status, answer in self.health_reports(urls):
            if status is None:
                unreachable.append(f"{url} ({answer})")
                continue
            if status == 401:
                raise UnauthorizedError(
                    f"node {url} refused the token: set BURLA_NODE_TOKEN to the token its agent was started with"
                )
            if status != 200:
                unreachable.append(f"{url} (answered {status}: {answer.get('message', answer)})")
                continue
            mismatch = version_mismatch(python_version(), burla_version(), str(answer.get("python")), str(answer.get("burla")))
            if mismatch:
                raise VersionMismatch(f"node {url}: {mismatch}")
            capacity = capacity_from_health(answer)
            slots = capacity.max_slots(request.func_cpu, request.func_ram, request.func_gpu)
            if request.image is not None and capacity.image != request.image:
                refused.append(describe_node(url, capacity))
                continue
            if slots < 1:
                refused.append(describe_node(url, capacity))
                continue
            nodes.append(
                NodeInfo(
                    node_id=url,
                    cpus=capacity.cpus,
                    ram_gb=capacity.ram_gb,
                    gpus=capacity.gpus,
                    image=capacity.image,
                    address=url,
                    slots=slots,
                )
            )
        if not nodes:
            if refused:
                asked = [f"func_cpu={request.func_cpu}", f"func_ram={request.func_ram}"]
                if request.func_gpu is not None:
                    asked.append(describe_func_gpu(request.func_gpu))
                if request.image is not None:
                    asked.append(f"image={request.image!r}")
                raise NoCompatibleNodes(
                    f"no node can run {', '.join(asked)}: " + "; ".join(refused)
                    + ("; and these did not answer: " + "; ".join(unreachable) if unreachable else "")
                )
            raise NodeDisconnected("none of the nodes answered: " + "; ".join(unreachable))
        if unreachable:
            print(
                f"burla: {len(unreachable)} node(s) did not answer and are left out of this job: "
                + "; ".join(unreachable),
                file=sys.stderr,
            )
        return nodes

    def grow(self, request: ResourceRequest, nodes: list[NodeInfo]) -> list[NodeInfo]:
        print(
            "burla: grow=True has no effect on the nodes backend: it runs on the machines in BURLA_NODES; "
            f"running on their {sum(n.slots for n in nodes)} slot(s).",
            file=sys.stderr,
        )
        return nodes
