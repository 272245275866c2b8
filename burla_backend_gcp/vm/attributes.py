"""The metadata attributes of a node VM: what the cluster service tells a node when it creates
its VM, and the node supervisor reads back from the metadata server. One owner of the names."""

from __future__ import annotations

from dataclasses import MISSING, dataclass, fields
from typing import Any

PREFIX = "burla-"


@dataclass(frozen=True)
class NodeAttributes:
    database: str
    image: str  # the container image its agent runs in (reported to callers)
    cpus: int  # what the agent offers: the machine type's vCPUs...
    ram_gb: float  # ...and a share of its memory (fit.RAM_SHARE)
    node_port: int = 8701  # 0: any free port (the stand-in, where all VMs share 127.0.0.1)
    idle_timeout_s: float = 600.0
    heartbeat_s: float = 10.0
    job_lease_s: float = 30.0
    grown_for: str = ""  # the job that booted it, "" for the cluster's own nodes
    cluster_url: str = ""  # the cluster service, told when the node's document changes ("": never)

    def to_metadata(self) -> dict[str, str]:
        return {PREFIX + f.name.replace("_", "-"): str(getattr(self, f.name)) for f in fields(self)}

    @classmethod
    def from_metadata(cls, attributes: dict[str, str]) -> "NodeAttributes":
        """The attributes from the metadata server's `instance/attributes`; ValueError names a
        missing or malformed one."""
        values: dict[str, Any] = {}
        for f in fields(cls):
            key = PREFIX + f.name.replace("_", "-")
            if key not in attributes:
                if f.default is not MISSING:
                    continue
                raise ValueError(f"the VM's metadata has no {key!r} attribute")
            text = attributes[key]
            kind = {"int": int, "float": float}.get(f.type if isinstance(f.type, str) else f.type.__name__, str)
            try:
                values[f.name] = kind(text)
            except ValueError:
                raise ValueError(f"metadata attribute {key!r} must be a {kind.__name__}; got {text!r}") from None
        return cls(**values)
