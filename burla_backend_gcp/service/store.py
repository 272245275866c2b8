"""The cluster service's view of Firestore: the config, user tokens, nodes, jobs and caller
addresses, as plain dicts and schema records. Blocking calls: the service runs them in threads
(`asyncio.to_thread`), never on its event loop.

Only queries, gets, sets and updates are used (no ListDocuments, BatchWrite or transactions), so
the same code runs on Google's Firestore, the gcloud emulator and the npm one.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from .. import schema


def FieldFilter(field: str, op: str, value: Any):  # noqa: N802 - google.cloud.firestore's name
    from google.cloud.firestore_v1.base_query import FieldFilter as _FieldFilter

    return _FieldFilter(field, op, value)

CONFIG_CACHE_SECONDS = 1.0


class ClusterStore:
    def __init__(self, project: str, database: str = schema.DATABASE, client: Any = None) -> None:
        if client is None:
            from .. import clients

            client = clients.firestore(project, database)
        self.client = client
        self._config: tuple[float, schema.ClusterConfig] | None = None
        self._lock = threading.Lock()

    # --- config --------------------------------------------------------------------------------

    def config_reference(self):
        return self.client.collection(schema.CONFIG_COLLECTION).document(schema.CONFIG_DOCUMENT)

    def config(self, fresh: bool = False) -> schema.ClusterConfig:
        """The config document (cached for a second: every request reads it)."""
        with self._lock:
            cached = self._config
        if cached is not None and not fresh and time.monotonic() - cached[0] < CONFIG_CACHE_SECONDS:
            return cached[1]
        snapshot = self.config_reference().get()
        config = schema.ClusterConfig.from_document(snapshot.to_dict() if snapshot.exists else None)
        with self._lock:
            self._config = (time.monotonic(), config)
        return config

    def write_config(self, config: schema.ClusterConfig) -> None:
        self.config_reference().set(config.to_document())
        with self._lock:
            self._config = None

    # --- tokens --------------------------------------------------------------------------------

    def token(self, token: str) -> schema.UserToken | None:
        snapshot = self.client.collection(schema.USER_TOKENS).document(schema.token_hash(token)).get()
        return schema.UserToken.from_document(snapshot.to_dict()) if snapshot.exists else None

    def add_token(self, token: str, record: schema.UserToken) -> None:
        self.client.collection(schema.USER_TOKENS).document(schema.token_hash(token)).set(record.to_document())

    def revoke_token(self, token: str) -> None:
        self.client.collection(schema.USER_TOKENS).document(schema.token_hash(token)).set({"revoked": True}, merge=True)

    def revoke_job_tokens(self, job_id: str) -> None:
        query = self.client.collection(schema.USER_TOKENS).where(filter=FieldFilter("job_id", "==", job_id))
        for snapshot in query.stream():
            snapshot.reference.set({"revoked": True}, merge=True)

    # --- users -------------------------------------------------------------------------------

    def user(self, email: str) -> dict | None:
        snapshot = self.client.collection(schema.USERS).document(email).get()
        return snapshot.to_dict() if snapshot.exists else None

    def is_admin(self, email: str) -> bool:
        user = self.user(email)
        return bool(user) and user.get("role") == schema.ROLE_ADMIN

    def set_user(self, email: str, role: str, added_by: str) -> None:
        self.client.collection(schema.USERS).document(email).set(
            {"email": email, "role": role, "added_at": time.time(), "added_by": added_by}
        )

    # --- nodes ---------------------------------------------------------------------------------

    def node_reference(self, node_id: str):
        return self.client.collection(schema.NODES).document(node_id)

    def nodes(self, statuses: frozenset[str] | None = None) -> list[dict]:
        """Every node document (with the given statuses), oldest first."""
        query = self.client.collection(schema.NODES)
        if statuses is not None:
            query = query.where(filter=FieldFilter("status", "in", sorted(statuses)))
        nodes = [snapshot.to_dict() for snapshot in query.stream()]
        return sorted(nodes, key=lambda node: (node.get("created_at") or 0, node.get("node_id", "")))

    def node(self, node_id: str) -> dict | None:
        snapshot = self.node_reference(node_id).get()
        return snapshot.to_dict() if snapshot.exists else None

    def set_node(self, node_id: str, values: dict) -> None:
        self.node_reference(node_id).set(values, merge=True)

    def set_nodes(self, nodes: dict[str, dict]) -> None:
        """Several node documents in one commit (a grow's VMs appear together)."""
        batch = self.client.batch()
        for node_id, values in nodes.items():
            batch.set(self.node_reference(node_id), values, merge=True)
        batch.commit()

    def add_node_log(self, node_id: str, text: str) -> None:
        self.node_reference(node_id).collection(schema.NODE_LOGS).add({"time": time.time(), "text": text})

    # --- jobs ----------------------------------------------------------------------------------

    def job_reference(self, job_id: str):
        return self.client.collection(schema.JOBS).document(job_id)

    def job(self, job_id: str) -> dict | None:
        snapshot = self.job_reference(job_id).get()
        return snapshot.to_dict() if snapshot.exists else None

    def create_job(self, job_id: str, values: dict) -> None:
        self.job_reference(job_id).create(values)

    def update_job(self, job_id: str, values: dict) -> None:
        self.job_reference(job_id).set(values, merge=True)

    def jobs(self, limit: int | None = None, detach: bool | None = None) -> list[dict]:
        """Jobs, newest first."""
        query = self.client.collection(schema.JOBS)
        if detach is not None:
            query = query.where(filter=FieldFilter("detach", "==", detach))
        jobs = [snapshot.to_dict() for snapshot in query.stream()]
        jobs.sort(key=lambda job: job.get("created_at") or 0, reverse=True)
        return jobs[:limit] if limit else jobs

    # --- caller addresses ----------------------------------------------------------------------

    def caller_addresses(self) -> list[str]:
        return sorted(snapshot.id for snapshot in self.client.collection(schema.CALLER_ADDRESSES).stream())

    def add_caller_address(self, address: str, email: str) -> None:
        self.client.collection(schema.CALLER_ADDRESSES).document(address).set(
            {"address": address, "email": email, "seen_at": time.time()}
        )
