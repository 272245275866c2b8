"""The `http` transport: a job's sessions with node agents, configured by the backend that uses it.

A backend builds `HttpTransport(HttpSettings(...))` from its own configuration (the nodes
backend from BURLA_NODES / BURLA_NODE_TOKEN, the gcp backend from what its cluster service
answers): nothing here reads a backend's environment variables. A node may carry its own
credentials (`NodeInfo.access`), which win over the settings'.
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass, field

from ..envsync.job import describe_job_environment
from ..errors import InvalidArgument, UnauthorizedError
from ..interfaces import NodeSession, Transport
from ..types import EventSink, JobSpec, NodeInfo
from .client import node_client
from .protocol import encode_job_environment
from .session import HttpSession

LOSS_SECONDS = 6.0  # no answer from a node for this long: it is lost (detected well within 10 s)
ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")


@dataclass(frozen=True)
class HttpSettings:
    """How to reach a backend's node agents.

    `token`: the agents' bearer token; `ca_file` / `ca_pem`: the CA that signed their TLS
    certificates (None: the system's); `loss_seconds`: silence after which a node is lost;
    `nested_env`: environment variables a function running on a node needs so that a
    remote_parallel_map it calls itself runs on the same backend with the same settings."""

    token: str
    ca_file: str | None = None
    ca_pem: str | None = None
    loss_seconds: float = LOSS_SECONDS
    nested_env: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.token, str) or not self.token.strip():
            raise UnauthorizedError("the http transport needs the node agents' token")
        if not (isinstance(self.loss_seconds, (int, float)) and self.loss_seconds > 0):
            raise InvalidArgument(f"loss_seconds must be a number > 0; got {self.loss_seconds!r}")
        for name, value in self.nested_env.items():
            if not (isinstance(name, str) and ENV_NAME.match(name) and isinstance(value, str)):
                raise InvalidArgument(f"nested_env: {name!r} is not an environment variable name with a string value")

    def __repr__(self) -> str:  # never show the token
        return f"HttpSettings(ca_file={self.ca_file!r}, loss_seconds={self.loss_seconds}, nested_env={sorted(self.nested_env)})"


class HttpTransport(Transport):
    """Reaches node agents over HTTP(S); each NodeInfo's `address` is the agent's URL."""

    def __init__(self, settings: HttpSettings) -> None:
        super().__init__({})
        self.settings = settings
        self._environment: tuple[str, dict] | None = None  # (job id, its environment's request fields)
        self._environment_lock = threading.Lock()

    def prepare(self, job: JobSpec) -> None:
        self.environment_fields(job)  # while the first nodes are asked for, or boot

    def environment_fields(self, job: JobSpec) -> dict:
        """The caller's packages and local code for the job's requests (envsync), made once per
        job before anything is sent: a local-code archive over its cap fails here."""
        with self._environment_lock:  # a session opened while prepare() works waits for it
            if self._environment is None or self._environment[0] != job.job_id:
                environment = describe_job_environment(job.function_bytes, job.options)
                self._environment = (job.job_id, encode_job_environment(environment))
            return self._environment[1]

    def open_session(self, node: NodeInfo, job: JobSpec, slots: int, events: EventSink) -> NodeSession:
        if not node.address:
            raise InvalidArgument(f"node {node.node_id} has no address for the http transport")
        access = node.access
        token = access.token if access is not None else self.settings.token
        ca_file = access.ca_file if access is not None else self.settings.ca_file
        ca_pem = access.ca_pem if access is not None else self.settings.ca_pem
        fields = self.environment_fields(job)
        client = node_client(node.address, token, ca_file, ca_pem)
        return HttpSession(client, node, job, slots, events, self.settings.loss_seconds, self.settings.nested_env, fields)
