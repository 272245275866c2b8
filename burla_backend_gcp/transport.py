"""The gcp backend's transport: the node agents' HTTP transport (burla_core.node.transport),
with the credentials the cluster service handed out for each node (NodeInfo.access: the node
token and the cluster CA). A node without them is refused: the caller's own burla token is never
sent to a node."""

from __future__ import annotations

from burla_core.errors import InvalidArgument
from burla_core.interfaces import NodeSession
from burla_core.node.transport import LOSS_SECONDS, HttpSettings, HttpTransport
from burla_core.types import EventSink, JobSpec, NodeInfo

from . import job_reporter
from .settings import GcpSettings

NO_SHARED_TOKEN = "per-node"  # HttpSettings needs a token; every gcp node carries its own

# job_id -> the environment-sync fields the caller of a detached job described on its own
# machine: its runner (runner.py) runs elsewhere, and must send the caller's packages and local
# code to the nodes, not its own.
SHIPPED_ENVIRONMENTS: dict[str, dict] = {}


class GcpTransport(HttpTransport):
    def __init__(self, options: dict | None = None) -> None:
        options = options or {}
        settings = GcpSettings.load(options)
        loss = options.get("loss_seconds")
        try:
            loss_seconds = float(loss) if loss is not None else LOSS_SECONDS
        except (TypeError, ValueError):
            raise InvalidArgument(f"backend_options['loss_seconds'] must be a number of seconds; got {loss!r}") from None
        super().__init__(HttpSettings(token=NO_SHARED_TOKEN, loss_seconds=loss_seconds, nested_env=settings.nested_env))

    def environment_fields(self, job: JobSpec) -> dict:
        shipped = SHIPPED_ENVIRONMENTS.get(job.job_id)
        return shipped if shipped is not None else super().environment_fields(job)

    def open_session(self, node: NodeInfo, job: JobSpec, slots: int, events: EventSink) -> NodeSession:
        if node.access is None:
            raise InvalidArgument(f"node {node.node_id} came without the cluster's credentials for it")
        # The provisioner's reporter sees the session's events, for the dashboard (job_reporter.py).
        reporter = job_reporter.reporter_for(job.job_id)
        return reporter.session(super().open_session(node, job, slots, reporter.sink(events)))
