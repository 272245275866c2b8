"""The service's live view of the cluster's nodes, and the rules that keep node documents true.

    NodeRegistry._poll (one task) ── every poll_s while a caller waits (BOOTING_POLL_S while a
        node it may be waiting for boots), else every IDLE_POLL_S ──►
        ClusterStore.nodes()  ─► snapshot, version += 1 when anything changed ─► waiters wake
        └─ sweep: BOOTING past boot_timeout_s, or serving with a heartbeat older than
           HEARTBEAT_MISSES beats ─► FAILED with the reason, and its VM deleted (Grower)

Callers long-poll (`wait_for_change`) instead of each reading Firestore: however many jobs
wait, the service reads the node documents once per poll.
"""

from __future__ import annotations

import asyncio
import logging
import time

from .. import schema

log = logging.getLogger("burla.cluster")

IDLE_POLL_S = 5.0
# A booting node's supervisor tells the service when it is READY (POST /v1/nodes/ID/changed:
# `nudge`), so the caller hears of it at once; this poll, while a caller waits and a node boots,
# only covers a node that cannot reach the service. Polling faster costs Firestore reads (and, on
# the stand-in, the emulator's CPU that the booting node needs).
BOOTING_POLL_S = 0.5
HEARTBEAT_MISSES = 4  # a serving node silent for this many heartbeats is taken for lost


class NodeRegistry:
    def __init__(self, store, grower, poll_s: float = 0.5) -> None:
        self.store = store
        self.grower = grower
        self.poll_s = poll_s
        self.nodes: dict[str, dict] = {}
        self.version = 0
        self._changed = asyncio.Condition()
        self._waiters = 0
        self._wake = asyncio.Event()
        self._task: asyncio.Task | None = None
        self._swept: set[str] = set()
        self.refreshed_at = 0.0  # time.monotonic() of the last read

    async def start(self) -> None:
        await self.refresh()
        self._task = asyncio.create_task(self._poll(), name="burla-node-registry")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass

    async def refresh(self) -> None:
        """Read the node documents now; wake the waiters if anything changed."""
        nodes = {node["node_id"]: node for node in await asyncio.to_thread(self.store.nodes) if node.get("node_id")}
        self.refreshed_at = time.monotonic()
        if nodes != self.nodes:
            async with self._changed:
                self.nodes = nodes
                self.version += 1
                self._changed.notify_all()
        await self._sweep()

    async def recent(self) -> None:
        """Make sure the snapshot is at most poll_s old (a caller about to start a job)."""
        if time.monotonic() - self.refreshed_at > self.poll_s:
            await self.refresh()

    def nudge(self) -> None:
        """Something changed (a VM was created or deleted here): read again soon."""
        self._wake.set()

    async def _poll(self) -> None:
        while True:
            if not self._waiters:
                delay = IDLE_POLL_S
            elif any(node.get("status") == schema.BOOTING for node in self.nodes.values()):
                delay = min(self.poll_s, BOOTING_POLL_S)
            else:
                delay = self.poll_s
            try:
                await asyncio.wait_for(self._wake.wait(), timeout=delay)
            except asyncio.TimeoutError:
                pass
            self._wake.clear()
            try:
                await self.refresh()
            except asyncio.CancelledError:
                raise
            except Exception:  # Firestore unavailable for a moment: logged, retried next poll
                log.warning("reading the node documents failed", exc_info=True)

    async def wait_for_change(self, version: int, timeout_s: float) -> int:
        """Return the registry's version once it is past `version`, or after `timeout_s`."""
        self._waiters += 1
        self._wake.set()
        try:
            async with self._changed:
                try:
                    await asyncio.wait_for(self._changed.wait_for(lambda: self.version > version), timeout_s)
                except asyncio.TimeoutError:
                    pass
                return self.version
        finally:
            self._waiters -= 1

    # --- keeping the documents true ------------------------------------------------------------

    async def _sweep(self) -> None:
        config = await asyncio.to_thread(self.store.config)
        now = time.time()
        for node in list(self.nodes.values()):
            node_id, status = node["node_id"], node.get("status")
            reason = None
            if status == schema.BOOTING and node.get("created_at") and now - node["created_at"] > config.boot_timeout_s:
                reason = f"its VM did not become ready within {config.boot_timeout_s:.0f} s"
            elif status in schema.SERVING_STATUSES and node.get("heartbeat_at"):
                silent = now - node["heartbeat_at"]
                if silent > HEARTBEAT_MISSES * config.heartbeat_s:
                    reason = f"no heartbeat for {silent:.0f} s (the VM stopped answering)"
            if reason is None or node_id in self._swept:
                continue
            self._swept.add(node_id)
            log.warning("node %s: %s; deleting its VM", node_id, reason)
            await asyncio.to_thread(self.grower.fail_node, node, reason)
            self.nudge()

    def serving(self) -> list[dict]:
        return [node for node in self.nodes.values() if node.get("status") in schema.SERVING_STATUSES]
