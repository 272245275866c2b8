"""The gcp backend's transport: the node agents' HTTP transport (burla_core.node.transport),
with the credentials the cluster service handed out for each node (NodeInfo.access: the node
token and the cluster CA). A node without them is refused: the caller's own burla token is never
sent to a node."""

from __future__ import annotations

from burla_core.errors import InvalidArgument
from burla_core.interfaces import NodeSession
from burla_core.node.transport import HttpSettings, HttpTransport
from burla_core.types import EventSink, JobSpec, NodeInfo

from . import job_reporter
from .settings import GcpSettings

NO_SHARED_TOKEN = "per-node"  # HttpSettings needs a token; every gcp node carries its own


class GcpTransport(HttpTransport):
    def __init__(self, options: dict | None = None) -> None:
        settings = GcpSettings.load(options or {})
        super().__init__(HttpSettings(token=NO_SHARED_TOKEN, nested_env=settings.nested_env))

    def open_session(self, node: NodeInfo, job: JobSpec, slots: int, events: EventSink) -> NodeSession:
        if node.access is None:
            raise InvalidArgument(f"node {node.node_id} came without the cluster's credentials for it")
        # The provisioner's reporter sees the session's events, for the dashboard (job_reporter.py).
        reporter = job_reporter.reporter_for(job.job_id)
        return reporter.session(super().open_session(node, job, slots, reporter.sink(events)))
