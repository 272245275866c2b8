"""Long-running operations, both kinds Google's APIs use.

- Compute Engine's own `Operation` (zonal, regional or global): PENDING → RUNNING → DONE, with
  `error.errors[]` (QUOTA_EXCEEDED, ZONE_RESOURCE_POOL_EXHAUSTED…) and `httpErrorStatusCode` when
  the work failed. `wait` blocks until DONE or a deadline (GCE's is about two minutes) and then
  answers the operation as it stands, so a caller loops on it.
- `google.longrunning.Operation` (Cloud Run, Service Usage, Firestore Admin): `done`, then
  `response` (an `Any` of the API's result) or `error` (a `google.rpc.Status`).
"""

from __future__ import annotations

import itertools
import random
import threading
import time
from datetime import datetime, timezone
from typing import Any, Callable

from google.cloud import compute_v1
from google.longrunning import operations_pb2
from google.rpc import status_pb2

from .rest import not_found

_ids = itertools.count(1)


def now_rfc3339() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class ComputeOperations:
    """Compute Engine operations of one project, keyed by (scope, name); scope is
    `zones/Z`, `regions/R` or `global`."""

    def __init__(self, project_id: str, base_url: Callable[[], str], wait_deadline_s: float = 120.0):
        self.project_id = project_id
        self._base_url = base_url
        self.wait_deadline_s = wait_deadline_s
        self._ops: dict[tuple[str, str], compute_v1.Operation] = {}
        self._changed = threading.Condition()

    def start(self, scope: str, operation_type: str, target: str, *, user: str) -> compute_v1.Operation:
        number = next(_ids)
        name = f"operation-{int(time.time() * 1000)}-{number:06x}-{random.getrandbits(32):08x}"
        base = f"{self._base_url()}/compute/v1/projects/{self.project_id}"
        op = compute_v1.Operation(
            id=random.getrandbits(63), name=name, kind="compute#operation", operation_type=operation_type,
            target_link=f"{base}/{target}", target_id=random.getrandbits(63), status="RUNNING", user=user,
            progress=0, insert_time=now_rfc3339(), start_time=now_rfc3339(),
            self_link=f"{base}/{scope}/operations/{name}",
        )
        if scope.startswith("zones/"):
            op.zone = f"{base}/{scope}"
        elif scope.startswith("regions/"):
            op.region = f"{base}/{scope}"
        with self._changed:
            self._ops[(scope, name)] = op
        return compute_v1.Operation(op)

    def finish(self, scope: str, name: str, *, errors: list[compute_v1.Errors] | None = None,
               http_status: int = 0, http_message: str = "") -> None:
        with self._changed:
            op = self._ops[(scope, name)]
            op.status = "DONE"
            op.progress = 100
            op.end_time = now_rfc3339()
            if errors:
                op.error = compute_v1.Error(errors=errors)
                op.http_error_status_code = http_status
                op.http_error_message = http_message
            self._changed.notify_all()

    def record_done(self, scope: str, operation_type: str, target: str, *, user: str) -> compute_v1.Operation:
        """An operation the system did by itself (a preemption), listed but never waited on."""
        op = self.start(scope, operation_type, target, user=user)
        self.finish(scope, op.name)
        return self.get(scope, op.name)

    def get(self, scope: str, name: str) -> compute_v1.Operation:
        with self._changed:
            op = self._ops.get((scope, name))
            if op is None:
                raise not_found(f"projects/{self.project_id}/{scope}/operations/{name}")
            return compute_v1.Operation(op)

    def wait(self, scope: str, name: str, deadline_s: float | None = None) -> compute_v1.Operation:
        deadline = time.monotonic() + (self.wait_deadline_s if deadline_s is None else deadline_s)
        with self._changed:
            while True:
                op = self._ops.get((scope, name))
                if op is None:
                    raise not_found(f"projects/{self.project_id}/{scope}/operations/{name}")
                left = deadline - time.monotonic()
                if op.status == compute_v1.Operation.Status.DONE or left <= 0:
                    return compute_v1.Operation(op)
                self._changed.wait(left)

    def list(self, scope: str) -> list[compute_v1.Operation]:
        with self._changed:
            return [compute_v1.Operation(op) for (s, _), op in self._ops.items() if s == scope]

    def delete(self, scope: str, name: str) -> None:
        with self._changed:
            if self._ops.pop((scope, name), None) is None:
                raise not_found(f"projects/{self.project_id}/{scope}/operations/{name}")


class LongRunningOperations:
    """`google.longrunning.Operation`s; each API keeps its own, named under its own prefix."""

    def __init__(self) -> None:
        self._ops: dict[str, operations_pb2.Operation] = {}
        self._changed = threading.Condition()

    def start(self, name: str, metadata: Any = None) -> operations_pb2.Operation:
        op = operations_pb2.Operation(name=name, done=False)
        if metadata is not None:
            op.metadata.Pack(_pb(metadata))
        with self._changed:
            self._ops[name] = op
        return self._copy(op)

    def new_name(self, prefix: str) -> str:
        return f"{prefix}/operations/op-{next(_ids)}-{random.getrandbits(32):08x}"

    def succeed(self, name: str, response: Any) -> None:
        with self._changed:
            op = self._ops[name]
            op.response.Pack(_pb(response))
            op.done = True
            self._changed.notify_all()

    def fail(self, name: str, code: int, message: str) -> None:
        """`code` is a google.rpc.Code (e.g. code_pb2.RESOURCE_EXHAUSTED)."""
        with self._changed:
            op = self._ops[name]
            op.error.CopyFrom(status_pb2.Status(code=code, message=message))
            op.done = True
            self._changed.notify_all()

    def done_now(self, name: str, response: Any, metadata: Any = None) -> operations_pb2.Operation:
        self.start(name, metadata)
        self.succeed(name, response)
        return self.get(name)

    def get(self, name: str) -> operations_pb2.Operation:
        with self._changed:
            op = self._ops.get(name)
            if op is None:
                raise not_found(name)
            return self._copy(op)

    def wait(self, name: str, timeout_s: float) -> operations_pb2.Operation:
        deadline = time.monotonic() + timeout_s
        with self._changed:
            while name in self._ops and not self._ops[name].done:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._changed.wait(left)
        return self.get(name)

    def list(self, prefix: str) -> list[operations_pb2.Operation]:
        with self._changed:
            return [self._copy(op) for name, op in self._ops.items() if name.startswith(prefix + "/")]

    def delete(self, name: str) -> None:
        with self._changed:
            if self._ops.pop(name, None) is None:
                raise not_found(name)

    @staticmethod
    def _copy(op: operations_pb2.Operation) -> operations_pb2.Operation:
        copy = operations_pb2.Operation()
        copy.CopyFrom(op)
        return copy


def _pb(message: Any):
    return type(message).pb(message) if hasattr(type(message), "pb") else message


