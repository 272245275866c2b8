"""The GCP stand-in: Google Cloud's APIs, answered on 127.0.0.1 with no Google account.

    StandIn ─┬─ one HTTP port (server.py): Compute Engine (compute.py, firewalls.py, catalog.py), Cloud Run
             │  (cloudrun.py), Secret Manager (secret_manager.py), Resource Manager + Service Usage
             │  (projects.py), IAM admin (iam_admin.py), Firestore Admin (firestore_admin.py),
             │  Cloud Storage (storage.py, gcp-storage-emulator behind it)
             ├─ IAM (iam.py): the project policy, resource policies, bearer tokens
             ├─ metadata servers (metadata.py): one per VM, Cloud Run service or workstation
             ├─ simulated VMs (vms.py) and Cloud Run revisions: local process groups, reaped
             │  (processes.py); the machine seam (seam.py) is where a VM differs from a real one
             └─ Google's Firestore emulator (firestore.py), when asked for

Clients reach it through burla_backend_gcp.clients with `BURLA_GCP_STANDIN=<StandIn.url>` (or
`endpoint=`); `StandIn.environment()` is everything a local process needs to use it. Faults for
tests: `set_cpu_quota`, `stockout`, `fail_boot`, `preempt`, `cut_network`/`restore_network`,
`fail_next` (any method, any HTTP error). docs/gcp-standin.md is the user's guide.
"""

from __future__ import annotations

import secrets
import shutil
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path

from .catalog import CatalogApi
from .cloudrun import CloudRunApi
from .compute import ComputeApi
from .firestore import FirestoreEmulator
from .firestore_admin import FirestoreAdminApi
from .firewalls import FirewallsApi
from .iam import Iam
from .iam_admin import IamAdminApi
from .metadata import MetadataIdentity, MetadataServer
from .processes import Processes, local_environment
from .projects import ProjectsApi
from .rest import ApiError
from .secret_manager import SecretManagerApi
from .server import LoggedRequest, Router, serve
from .storage import StorageBackend

__all__ = ["StandIn", "StandInConfig", "ApiError", "LoggedRequest"]

OWNER = "user:owner@example.com"


@dataclass
class StandInConfig:
    project_id: str = "burla-standin"
    project_number: int = 123456789012
    port: int = 0  # 0: any free port
    root: Path | None = None  # VM and service folders and logs; a temporary folder if None
    owner: str = OWNER  # holds roles/owner on the project
    enabled_services: tuple[str, ...] | None = None  # None: every API the stand-in serves
    provision_delay_s: float = 0.0  # insert → RUNNING
    boot_delay_s: float = 0.0  # RUNNING → the startup script starts
    boot_stagger_s: float = 0.0  # a VM inserted while n others still boot waits n × this more
    stop_grace_s: float = 2.0  # SIGTERM → SIGKILL when a VM or revision stops
    preempt_grace_s: float = 1.0  # how long a preempted VM's shutdown-script may run
    operation_wait_s: float = 120.0  # how long `operations.wait` blocks before answering (GCE: ~2 min)
    run_images: dict[str, list[str]] = field(default_factory=dict)  # image (or fnmatch pattern) → command
    run_start_timeout_s: float = 30.0  # a revision must listen on PORT within this
    firestore: bool = False  # start Google's Firestore emulator too


class StandIn:
    """A running stand-in. Use as a context manager, or `start()` / `stop()`."""

    def __init__(self, config: StandInConfig | None = None, **overrides):
        self.config = config or StandInConfig()
        for key, value in overrides.items():
            setattr(self.config, key, value)
        self.project_id = self.config.project_id
        self.project_number = self.config.project_number
        self.default_compute_account = f"{self.project_number}-compute@developer.gserviceaccount.com"
        self._own_root = self.config.root is None
        self.root = Path(self.config.root or tempfile.mkdtemp(prefix="burla-standin-"))
        self.root.mkdir(parents=True, exist_ok=True)
        self._id_token_key = secrets.token_bytes(32)
        self._metadata_servers: list[MetadataServer] = []
        self._lock = threading.Lock()
        self.iam = Iam(self.project_id)
        self.iam.grant(f"projects/{self.project_id}", "roles/owner", self.config.owner)
        self.iam.grant(f"projects/{self.project_id}", "roles/editor", f"serviceAccount:{self.default_compute_account}")
        self.processes: Processes | None = None
        self.storage: StorageBackend | None = None
        self.firestore_emulator: FirestoreEmulator | None = None
        self._server = None
        self.projects = ProjectsApi(self, self.config.enabled_services)
        self.iam_admin = IamAdminApi(self)
        self.iam.jwt_verifier = self.iam_admin.member_of_jwt
        self.compute = ComputeApi(self)
        self.compute.operations.wait_deadline_s = self.config.operation_wait_s
        self.catalog = CatalogApi(self)
        self.firewalls = FirewallsApi(self)
        self.firewalls.operations.wait_deadline_s = self.config.operation_wait_s
        self.cloud_run = CloudRunApi(self)
        self.secrets = SecretManagerApi(self)
        self.firestore_admin = FirestoreAdminApi(self)
        self.router = Router(self)
        for api in (self.compute, self.catalog, self.firewalls, self.cloud_run, self.secrets, self.projects, self.iam_admin,
                    self.firestore_admin):
            self.router.add(api.routes())

    # ------------------------------------------------------------ lifecycle

    def start(self) -> "StandIn":
        """Start the APIs (and the emulator); on any failure, stop what had started and re-raise."""
        try:
            self.processes = Processes()
            self.storage = StorageBackend()
            if self.config.firestore:
                self.firestore_emulator = FirestoreEmulator(self.root / "firestore-emulator.log",
                                                            reaper=self.processes.reaper).start()
            self._server = serve(self, self.router, self.config.port)
        except BaseException:
            self.stop()
            raise
        threading.Thread(target=self._server.serve_forever, args=(0.05,), name="gcp-standin", daemon=True).start()
        return self

    def stop(self) -> None:
        self.compute.close()
        self.cloud_run.close()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        with self._lock:
            servers, self._metadata_servers = self._metadata_servers, []
        for server in servers:
            server.close()
        if self.storage is not None:
            self.storage.close()
            self.storage = None
        if self.firestore_emulator is not None:
            self.firestore_emulator.stop()
            self.firestore_emulator = None
        if self.processes is not None:
            self.processes.close()
            self.processes = None
        if self._own_root:
            shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> "StandIn":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("the stand-in is not started")
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    # ------------------------------------------------------------ identities

    def mint_token(self, member: str | None = None, lifetime_s: float = 3600.0) -> str:
        """A bearer token for `member` (default: the project's owner)."""
        return self.iam.mint(member or self.config.owner, lifetime_s)

    def credentials(self, member: str | None = None):
        """google-auth credentials that carry a token for `member` (default: the owner)."""
        from google.oauth2.credentials import Credentials

        return Credentials(token=self.mint_token(member))

    def metadata_server(self, identity: MetadataIdentity) -> MetadataServer:
        server = MetadataServer(identity, self.iam, id_token_key=self._id_token_key)
        with self._lock:
            self._metadata_servers.append(server)
        return server

    def workstation(self, member: str | None = None) -> MetadataServer:
        """A metadata server for a local process acting as `member` (a user or a service account):
        `google.auth.default()` in a process with its environment() gets `member`'s tokens."""
        member = member or self.config.owner
        identity = MetadataIdentity(project_id=self.project_id, project_number=self.project_number,
                                    service_account=member.split(":", 1)[-1], instance_id=0, name="workstation",
                                    member=member)
        return self.metadata_server(identity)

    def child_environment(self) -> dict[str, str]:
        """What every process the stand-in starts gets, besides its own metadata server."""
        env = {"BURLA_GCP_STANDIN": self.url, "BURLA_NETGUARD": "1", "GOOGLE_CLOUD_PROJECT": self.project_id}
        if self.firestore_emulator is not None:
            env["FIRESTORE_EMULATOR_HOST"] = self.firestore_emulator.host
        return env

    def environment(self, member: str | None = None) -> dict[str, str]:
        """The environment for a local process that uses the stand-in as `member` (default: the
        owner): the endpoint, the emulator, and a workstation metadata server for its credentials."""
        env = local_environment(self.child_environment())
        env.update(self.workstation(member).environment())
        return env

    def check_project(self, project: str) -> None:
        if project not in (self.project_id, str(self.project_number)):
            raise ApiError(403, f"Permission denied on resource project {project} (or it may not exist).",
                           reason="CONSUMER_INVALID", metadata={"consumer": f"projects/{project}"})

    # ------------------------------------------------------------ faults

    def set_cpu_quota(self, region: str, cpus: int | None, family: str = "") -> None:
        """Limit the vCPUs of VMs in `region` (of machine family `family`, e.g. "n2", if given)."""
        key = (region, family.lower())
        if cpus is None:
            self.compute.faults.cpu_quota.pop(key, None)
        else:
            self.compute.faults.cpu_quota[key] = cpus

    def stockout(self, zone: str, out_of_stock: bool = True) -> None:
        """Inserts in `zone` fail with ZONE_RESOURCE_POOL_EXHAUSTED until called with False."""
        (self.compute.faults.stockouts.add if out_of_stock else self.compute.faults.stockouts.discard)(zone)

    def fail_boot(self, name_pattern: str, why: str = "the guest OS did not boot") -> None:
        """VMs whose name matches (fnmatch) reach RUNNING but never run their startup script."""
        self.compute.faults.boot_failures[name_pattern] = why

    def preempt(self, vm_name: str) -> None:
        self.compute.preempt(vm_name)

    def cut_network(self, vm_name: str) -> None:
        self.compute.cut_network(vm_name)

    def restore_network(self, vm_name: str) -> None:
        self.compute.restore_network(vm_name)

    def fail_next(self, method_pattern: str, code: int = 429, message: str = "", times: int = 1,
                  reason: str = "") -> None:
        """The next `times` calls of methods matching `method_pattern` (fnmatch over names such as
        "compute.instances.insert" or "storage.objects.get") get HTTP `code`."""
        defaults = {429: ("Quota exceeded for quota metric 'Queries' and limit 'Queries per minute'.",
                          "RATE_LIMIT_EXCEEDED"),
                    503: ("The service is currently unavailable.", "")}
        text, default_reason = defaults.get(code, (f"Injected error {code}.", ""))
        self.router.inject(method_pattern, ApiError(code, message or text, reason=reason or default_reason or None),
                           times)

    @property
    def requests(self) -> list[LoggedRequest]:
        return list(self.router.log)
