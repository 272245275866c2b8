"""Firestore Admin (databases) in the stand-in, which the Firestore emulator does not implement.

The emulator creates a database on first use, so `create_database` here only records it (as a
finished operation whose response is the `Database`) and `get_database` answers 404 until it was
created, as the real API does. Documents themselves are the emulator's (standin/firestore.py).
"""

from __future__ import annotations

import re
import threading
import uuid
from typing import TYPE_CHECKING

from google.cloud.firestore_admin_v1 import types as fa
from google.cloud.firestore_admin_v1.services.firestore_admin.transports.rest_base import (
    _BaseFirestoreAdminRestTransport as _A,
)
from google.longrunning import operations_pb2
from google.protobuf import timestamp_pb2

from .operations import LongRunningOperations
from .rest import ApiError, Call, Route, invalid, routes_for

if TYPE_CHECKING:
    from . import StandIn

SERVICE = "firestore.googleapis.com"
_DATABASE_ID = re.compile(r"^[a-z][a-z0-9-]{2,62}$")


class FirestoreAdminApi:
    def __init__(self, standin: "StandIn"):
        self.standin = standin
        self.operations = LongRunningOperations()
        self._lock = threading.Lock()
        self._databases: dict[str, fa.Database] = {}

    def routes(self) -> list[Route]:
        def r(base, request_type, handler, name: str) -> list[Route]:
            return routes_for(base, request_type, handler, service=SERVICE, name=name)

        return [
            *r(_A._BaseCreateDatabase, fa.CreateDatabaseRequest, self.create, "datastore.databases.create"),
            *r(_A._BaseGetDatabase, fa.GetDatabaseRequest, self.get, "datastore.databases.get"),
            *r(_A._BaseListDatabases, fa.ListDatabasesRequest, self.list, "datastore.databases.list"),
            *r(_A._BaseDeleteDatabase, fa.DeleteDatabaseRequest, self.delete, "datastore.databases.delete"),
            *r(_A._BaseGetOperation, operations_pb2.GetOperationRequest, self.get_operation,
               "datastore.operations.get"),
        ]

    def _project(self, call: Call, name: str, permission: str) -> str:
        project = name.split("/")[1] if name.count("/") >= 1 else ""
        self.standin.check_project(project)
        self.standin.iam.require(call.member, permission, f"projects/{project}")
        return project

    def create(self, call: Call, request: fa.CreateDatabaseRequest) -> operations_pb2.Operation:
        self._project(call, request.parent, "datastore.databases.create")
        if request.database_id != "(default)" and not _DATABASE_ID.match(request.database_id):
            raise invalid(f"Database ID '{request.database_id}' is not valid: 4-63 characters, lowercase letters, "
                          f"digits and hyphens, starting with a letter.")
        database = fa.Database(request.database)
        if not database.location_id:
            raise invalid("Database location_id is required.")
        if database.type_ == fa.Database.DatabaseType.DATABASE_TYPE_UNSPECIFIED:
            raise invalid("Database type is required.")
        name = f"{request.parent}/databases/{request.database_id}"
        now = timestamp_pb2.Timestamp()
        now.GetCurrentTime()
        database.name = name
        database.uid = str(uuid.uuid4())
        database.create_time = now
        database.update_time = now
        database.etag = "standin"
        database.concurrency_mode = database.concurrency_mode or fa.Database.ConcurrencyMode.PESSIMISTIC
        with self._lock:
            if name in self._databases:
                raise ApiError(409, "Database already exists. Please use another database_id", status="ALREADY_EXISTS")
            self._databases[name] = database
        op_name = f"{name}/operations/{uuid.uuid4().hex}"
        return self.operations.done_now(op_name, database, fa.CreateDatabaseMetadata())

    def _database(self, name: str) -> fa.Database:
        with self._lock:
            database = self._databases.get(name)
        if database is None:
            raise ApiError(404, f"Project '{name.split('/')[1]}' or database '{name.rsplit('/', 1)[-1]}' does not exist.")
        return database

    def get(self, call: Call, request: fa.GetDatabaseRequest) -> fa.Database:
        self._project(call, request.name, "datastore.databases.get")
        return self._database(request.name)

    def list(self, call: Call, request: fa.ListDatabasesRequest) -> fa.ListDatabasesResponse:
        self._project(call, request.parent, "datastore.databases.list")
        with self._lock:
            return fa.ListDatabasesResponse(databases=[d for n, d in sorted(self._databases.items())
                                                       if n.startswith(request.parent + "/")])

    def delete(self, call: Call, request: fa.DeleteDatabaseRequest) -> operations_pb2.Operation:
        self._project(call, request.name, "datastore.databases.delete")
        database = self._database(request.name)
        with self._lock:
            self._databases.pop(request.name, None)
        emulator = self.standin.firestore_emulator
        if emulator is not None:
            emulator.reset(project=self.standin.project_id, database=request.name.rsplit("/", 1)[-1])
        return self.operations.done_now(f"{request.name}/operations/{uuid.uuid4().hex}", database,
                                        fa.DeleteDatabaseMetadata())

    def get_operation(self, call: Call, request) -> operations_pb2.Operation:
        self._project(call, request.name, "datastore.databases.get")
        return self.operations.get(request.name)
