"""How the cluster service is configured: read once, from its environment, at start.

On Cloud Run `burla install` sets these variables on the service; the stand-in passes the same
ones to the local process that plays the service. Everything else (machine type, timeouts) is in
the config document in Firestore, read per request, so the dashboard can change it live.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from .. import schema

PROJECT_ENV = "BURLA_PROJECT"
DATABASE_ENV = "BURLA_DATABASE"
NODE_SERVICE_ACCOUNT_ENV = "BURLA_NODE_SERVICE_ACCOUNT"
BUCKET_ENV = "BURLA_BUCKET"
NODE_POLL_ENV = "BURLA_NODE_POLL_SECONDS"


@dataclass(frozen=True)
class ServiceSettings:
    """`project`: the user's project; `database`: the Firestore database; `node_service_account`:
    the identity its VMs run as; `bucket`: detached jobs' data; `node_poll_s`: how often the
    service reads the node documents while a caller waits for nodes."""

    project: str
    database: str = schema.DATABASE
    node_service_account: str = ""
    bucket: str = ""
    node_poll_s: float = 0.5
    extra: dict[str, str] = field(default_factory=dict)  # for routes added by other modules

    def __post_init__(self) -> None:
        if not self.node_service_account:
            object.__setattr__(self, "node_service_account",
                               f"{schema.NODE_SERVICE_ACCOUNT_ID}@{self.project}.iam.gserviceaccount.com")
        if not self.bucket:
            object.__setattr__(self, "bucket", schema.bucket_name(self.project))

    @classmethod
    def from_environment(cls) -> "ServiceSettings":
        project = os.environ.get(PROJECT_ENV) or os.environ.get("GOOGLE_CLOUD_PROJECT")
        if not project:
            from ..clients import default_project

            project = default_project()
        return cls(
            project=project,
            database=os.environ.get(DATABASE_ENV) or schema.DATABASE,
            node_service_account=os.environ.get(NODE_SERVICE_ACCOUNT_ENV, ""),
            bucket=os.environ.get(BUCKET_ENV, ""),
            node_poll_s=float(os.environ.get(NODE_POLL_ENV) or 0.5),
        )
