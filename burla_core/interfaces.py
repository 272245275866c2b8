"""The three pieces a backend is made of. A plugin subclasses these and registers them through
the hooks in `burla_core.hookspecs`.

    caller ── Scheduler ──┬── Transport.open_session(node A) ── NodeSession ──► workers on A
              ▲           └── Transport.open_session(node B) ── NodeSession ──► workers on B
              │                                                     │
              └──────────────── EventSink (results, logs, errors) ◄─┘
                                    ▲
        Provisioner ── Membership ──┘  nodes that join (grow=True) or leave while the job runs

The Provisioner says which nodes exist and how many calls each can run at once (slots) for a
given ResourceRequest, and may announce nodes while a job runs; the Transport moves batches to a
node and events back; the Scheduler decides which inputs go where and when. Everything the core
relies on is declared here; nothing is probed with getattr.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, Iterator

from .types import EventSink, InputBatch, JobProgress, JobSpec, Membership, NodeInfo, ResourceRequest


class Provisioner(ABC):
    """Where work can run. `options` is the call's backend_options dict."""

    #: Which of the parameters "grow", "region" and "disk_gb" this backend honours; for any other
    #: the core tells the user, once, that it has no effect here.
    honours: frozenset[str] = frozenset()

    def __init__(self, options: dict[str, Any] | None = None) -> None:
        self.options = options or {}

    @abstractmethod
    def eligible_nodes(self, request: ResourceRequest) -> list[NodeInfo]:
        """The nodes ready now that can run calls needing `request`, each with `slots` > 0.

        Raise `NoCompatibleNodes` (or a subclass) with a message that says what the nodes have
        when none can. A provisioner that can grow may return [] when nodes could be booted:
        the job then waits for the first node `watch_job` announces."""

    def watch_job(self, job: JobSpec, nodes: list[NodeInfo], membership: Membership) -> None:
        """The job starts on `nodes`. Return at once; from now until `membership.closed`, call
        `membership.join(node)` for each node that becomes ready for this job (grow=True:
        `membership.wanted_slots` says how many more slots it could use), `membership.leave`
        for a node that goes away, and, when `membership.growing`, `membership.growth_ended()`
        once no more nodes will join (with the reasons of failed boots). The default adds no
        node and ends growth at once."""
        membership.growth_ended()

    def release_idle(self) -> None:
        """Let idle nodes go (called after every job); the default keeps them."""

    def stop_requested(self, job: JobSpec) -> str | None:
        """Asked between the job's events (about ten times a second: answer from memory). A reason,
        such as "stopped from the dashboard", cancels the job as Ctrl-C would, and the caller's
        JobCanceled names it. The default never stops a job."""
        return None

    #: True when the backend keeps detach=True jobs itself (on its cluster, so that they outlive
    #: the caller's machine) through `run_detached`; False (the default): they run in a process
    #: on the caller's machine, with the local job store (burla_core.detach).
    runs_detached: bool = False

    def run_detached(self, job: JobSpec, indexed_inputs: Iterator[tuple[int, Any]], input_count: int | None, *,
                     generator: bool, spinner: bool) -> Any:
        """Store the job where the backend runs it, start it, and follow it like a normal call
        (logs printed, results in input order or, with `generator`, as they complete); stopping
        the caller stops only the following. Only called when `runs_detached`."""
        raise NotImplementedError(f"{type(self).__name__} does not run detached jobs itself")


class NodeSession(ABC):
    """One job on one node. Methods never block for long: results come back as events.

    The contract: every input of every submitted batch ends as exactly one RESULTS entry or one
    ERROR event, unless the session reports NODE_LOST; after NODE_LOST it puts no more events."""

    node_id: str
    slots: int
    #: The shortest batch worth sending this node, in seconds of its calls at the pace it shows:
    #: the scheduler does not cut a batch below that, even at the end of a job. For a node where
    #: each batch costs a round trip of its own (an engine's task: ~10 ms); 0 for none.
    min_batch_seconds: float = 0.0
    #: Into how many batches per slot the scheduler cuts the work that remains (guided
    #: self-scheduling: each batch holds remaining / (batch_split x slots) inputs): more, smaller
    #: batches end a job evenly; fewer, larger ones start fewer batches, for a node where each
    #: start costs a round trip (an engine's task). A node's first batch, before it has shown
    #: its pace, is cut in quarters whatever this says.
    batch_split: int = 4
    #: How much bigger a node's next batches may be after one came back within
    #: `max_batch_seconds`: they start small (the node's pace is not known) and grow by this
    #: factor each time. 2 by default; an engine's session, whose every batch costs a task,
    #: grows faster.
    batch_growth: int = 2
    #: The longest batch worth holding on the node, in seconds of its calls at the pace it shows:
    #: batches grow up to it, never past it; one over twice as slow (the node slowed down, the
    #: calls got longer) shrinks the next ones to a quarter of it. Longer batches cost fewer round
    #: trips; shorter ones leave more of the job to a node that joins, and less on a slow one.
    max_batch_seconds: float = 1.0
    #: How the end of a job is cut. False (guided self-scheduling): batches shrink as the work
    #: left does, so no slot is left holding much when the others run dry, at the cost of several
    #: small batches per slot. True: once every node has shown its pace, each batch holds what
    #: keeps the slot it goes to busy until the moment the whole job can end (the remaining work
    #: spread so that every slot runs dry at once), so each slot ends with one batch. For a node
    #: where each batch costs a round trip (an engine's task) and calls take about as long as
    #: each other.
    even_tail: bool = False

    @abstractmethod
    def submit(self, batch: InputBatch) -> None:
        """Queue a batch on the node."""

    @abstractmethod
    def cancel(self) -> None:
        """Stop the job's running calls and drop its queued inputs, within 2 s."""

    @abstractmethod
    def close(self) -> None:
        """Release the node's resources for this job (the job is over); errors are raised."""

    def is_stopped(self) -> bool:
        """After cancel(): True once none of the job's calls runs on the node any more. Until
        then the session still delivers the LOGS its calls wrote, so that output written before
        an error is never lost. The default says stopped at once."""
        return True

    def wait_stopped(self, timeout: float) -> bool:
        """After close(): wait up to `timeout` seconds until the job's calls have stopped on the
        node, so that the call returns only once nothing of the job runs. True when they have.
        The default returns True at once."""
        return True


class Transport(ABC):
    """How a job's function, batches, results, logs and errors travel to and from a node."""

    def __init__(self, options: dict[str, Any] | None = None) -> None:
        self.options = options or {}

    @abstractmethod
    def open_session(self, node: NodeInfo, job: JobSpec, slots: int, events: EventSink) -> NodeSession:
        """Start `job` on `node` with at most `slots` calls running at once; events for it are
        put on `events` as `[kind, node_id, data]` (see burla_core.types). A node that refuses
        the job may raise (a BurlaError) or report NODE_LOST."""

    def prepare(self, job: JobSpec) -> None:
        """The job starts: do now, on a thread of the scheduler's, what every session of it needs
        (the http transport describes the caller's environment here), so that it overlaps with
        asking for nodes and with nodes booting. `open_session` must still work when this has not
        finished or failed (it waits for it, or does the work itself). The default does nothing."""

    def close(self) -> None:
        """The call is over: release what the transport holds for it (the default: nothing)."""


class Scheduler(ABC):
    """Which input runs on which node and when."""

    #: What the caller's progress line shows; the scheduler keeps it current while `run` runs.
    progress: JobProgress

    def __init__(self) -> None:
        self.progress = JobProgress()

    @abstractmethod
    def run(
        self,
        job: JobSpec,
        inputs: Iterator[tuple[int, Any]],
        input_count: int | None,
        provisioner: Provisioner,
        transport: Transport,
        prepickled: bool = False,
    ) -> Iterator[list]:
        """Run the job; yield events `[kind, node_id, data]` (RESULTS, LOGS, ERROR, NOTICE,
        STARTED, TICK) as they arrive. `inputs` yields (input_index, value) lazily, or with
        `prepickled` (index, payload bytes). Yield STARTED as soon as the first batches are
        out. With `job.raise_errors`, an ERROR ends the job: the scheduler cancels the rest and
        yields the output already written before the ERROR itself. Closing the iterator (or an
        exception thrown into it) cancels the job; when it returns, nothing of the job runs."""
