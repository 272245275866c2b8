"""The three pieces a backend is made of. A plugin subclasses these and registers them through
the hooks in `burla_core.hookspecs`.

    caller ── Scheduler ──┬── Transport.open_session(node A) ── NodeSession ──► workers on A
                          └── Transport.open_session(node B) ── NodeSession ──► workers on B
              ▲                                                     │
              └──────────────── EventSink (results, logs, errors) ◄─┘

The Provisioner says which nodes exist and how many calls each can run at once (slots) for a
given ResourceRequest; the Transport moves batches to a node and events back; the Scheduler
decides which inputs go where and when.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, Iterator

from .types import EventSink, InputBatch, JobSpec, NodeInfo, ResourceRequest


class Provisioner(ABC):
    """Where work can run."""

    def __init__(self, options: dict[str, Any] | None = None) -> None:
        self.options = options or {}

    @abstractmethod
    def eligible_nodes(self, request: ResourceRequest) -> list[NodeInfo]:
        """Nodes that can run calls needing `request`, each with `slots` filled in (> 0).

        Raise `NoCompatibleNodes` (or a subclass) with a message that says what the nodes have
        when none can."""

    def grow(self, request: ResourceRequest, nodes: list[NodeInfo]) -> list[NodeInfo]:
        """Called for `grow=True`: add nodes and return the whole eligible list. The default
        cannot grow and returns `nodes` unchanged."""
        return nodes

    def release_idle(self) -> None:
        """Let idle nodes go (called after a job); the default keeps them."""


class NodeSession(ABC):
    """One job on one node. Methods never block for long: results come back as events."""

    node_id: str
    slots: int

    @abstractmethod
    def submit(self, batch: InputBatch) -> None:
        """Queue a batch on the node. Every input of it ends as exactly one RESULTS entry or one
        ERROR event, unless the session reports NODE_LOST."""

    @abstractmethod
    def cancel(self) -> None:
        """Stop the job's running calls and drop its queued inputs, within 2 s."""

    @abstractmethod
    def close(self) -> None:
        """Release the node's resources for this job (the job is over)."""

    def is_stopped(self) -> bool:
        """After cancel(): True once none of the job's calls runs on the node any more. Until
        then the session still delivers the LOGS its calls wrote, so that output written before
        an error is never lost. The default says stopped at once."""
        return True


class Transport(ABC):
    """How a job's function, batches, results, logs and errors travel to and from a node."""

    def __init__(self, options: dict[str, Any] | None = None) -> None:
        self.options = options or {}

    @abstractmethod
    def open_session(self, node: NodeInfo, job: JobSpec, slots: int, events: EventSink) -> NodeSession:
        """Start `job` on `node` with at most `slots` calls running at once; events for it are
        put on `events` as `[kind, node_id, data]` (see burla_core.types)."""


class Scheduler(ABC):
    """Which input runs on which node and when."""

    @abstractmethod
    def run(
        self,
        job: JobSpec,
        inputs: Iterator[tuple[int, Any]],
        input_count: int | None,
        provisioner: Provisioner,
        transport: Transport,
    ) -> Iterator[list]:
        """Run the job; yield events `[kind, node_id, data]` (RESULTS, LOGS, ERROR, NOTICE) as
        they arrive. Closing the iterator (or an exception thrown into it) cancels the job."""
