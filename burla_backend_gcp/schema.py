"""The cluster's shared names: its Firestore schema, its secrets, its node statuses and how user
tokens are stored. The one owner of these facts: the cluster service, the VMs, `burla install`,
`burla login` and the dashboard all read them from here.

Firestore (database `burla` of the user's project):

    cluster/config                  the cluster's config (ClusterConfig's fields)
    nodes/{node_id}                 one per VM (node_id = the instance name); NODE_* fields
    nodes/{node_id}/logs/{auto}     what the VM's startup path said (boot progress, why it failed)
    jobs/{job_id}                   one per job; JOB_* fields; counters updated with Increment
    jobs/{job_id}/logs/{seq}        detached jobs: their output, many lines per document
    jobs/{job_id}/results/{seq}     detached jobs: where each results chunk is in the bucket
    user_tokens/{sha256 of token}   a user's burla token, stored hashed, with its expiry
    users/{email}                   who may use the cluster (role "user" or "admin")
    caller_addresses/{address}      addresses callers logged in / started jobs from (firewall)

No document is written more than about once a second (Firestore's limit per document): node
heartbeats are seconds apart, job counters are flushed at most once a second, logs go to new
documents.

Importing this module loads nothing but the standard library.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from dataclasses import asdict, dataclass, field, fields
from typing import Any

DATABASE = "burla"

# --- collections -----------------------------------------------------------------------------
CONFIG_COLLECTION = "cluster"
CONFIG_DOCUMENT = "config"
NODES = "nodes"
NODE_LOGS = "logs"  # subcollection of a node
JOBS = "jobs"
JOB_LOGS = "logs"  # subcollection of a job
JOB_RESULTS = "results"  # subcollection of a job
USER_TOKENS = "user_tokens"
USERS = "users"
CALLER_ADDRESSES = "caller_addresses"

# --- secrets (Secret Manager, in the user's project) ------------------------------------------
NODE_TOKEN_SECRET = "burla-node-token"  # the bearer token every node agent checks
CA_CERT_SECRET = "burla-cluster-ca-cert"  # PEM of the cluster CA: nodes' TLS certificates chain to it
CA_KEY_SECRET = "burla-cluster-ca-key"  # its private key: nodes sign their own certificate with it
CLUSTER_SECRET = "burla-cluster-token"  # whoever may read it is an administrator of the cluster

# --- other resources install creates ----------------------------------------------------------
SERVICE_NAME = "burla-cluster"  # the Cloud Run service
SERVICE_ACCOUNT_ID = "burla-cluster"  # the service's identity: creates and deletes VMs
NODE_SERVICE_ACCOUNT_ID = "burla-node"  # the VMs' identity: reads the node secrets, writes its node document
NODE_TAG = "burla-cluster-node"  # network tag of every node VM; the firewall rule targets it
FIREWALL_RULE = "burla-cluster-node"  # admits the node port from the caller addresses only
NODE_LABEL = "burla-cluster"  # label key on every VM the cluster made (value: "node")


# Roles of the cluster's two service accounts: only what each needs, never the installer's.
# Project-level roles; the secrets are granted one by one (never the cluster secret, whose
# readers are the cluster's administrators).
SERVICE_ROLES = ("roles/compute.instanceAdmin.v1", "roles/compute.securityAdmin", "roles/datastore.user",
                 "roles/storage.objectAdmin")
SERVICE_SECRETS = (NODE_TOKEN_SECRET, CA_CERT_SECRET)  # roles/secretmanager.secretAccessor on each
NODE_ROLES = ("roles/compute.instanceAdmin.v1", "roles/datastore.user", "roles/storage.objectAdmin",
              "roles/logging.logWriter")  # instanceAdmin: a node deletes its own VM when idle
NODE_SECRETS = (NODE_TOKEN_SECRET, CA_CERT_SECRET, CA_KEY_SECRET)
# The service attaches the node account to the VMs it makes: roles/iam.serviceAccountUser on it.


def bucket_name(project: str) -> str:
    """The cluster's Cloud Storage bucket (detached jobs' inputs and results)."""
    return f"{project}-burla-cluster"


# --- node documents --------------------------------------------------------------------------
BOOTING, READY, RUNNING, FAILED, DELETED = "BOOTING", "READY", "RUNNING", "FAILED", "DELETED"
NODE_STATUSES = (BOOTING, READY, RUNNING, FAILED, DELETED)
LIVE_STATUSES = frozenset({BOOTING, READY, RUNNING})  # a VM exists (or is being made) for it
SERVING_STATUSES = frozenset({READY, RUNNING})  # its agent answers: callers may use it

# Fields of nodes/{node_id}. Times are seconds since the epoch (float), written by whoever
# changes the status; `heartbeat_at` is refreshed by the VM every ClusterConfig.heartbeat_s.
NODE_FIELDS = (
    "node_id",  # = the instance name
    "status",  # one of NODE_STATUSES
    "status_reason",  # why it is FAILED or DELETED ("idle for 600 s", "preempted", the agent's error)
    "boot_progress",  # what a BOOTING node is doing ("installing the node agent")
    "zone", "machine_type", "spot",
    "image",  # the container image its agent runs in ("python:3.11")
    "boot_image",  # the VM's boot disk image
    "cpus", "ram_gb",  # what its agent offers
    "gpus",  # [{"index", "name", "family", "memory_gb"}] as its agent detected them
    "address",  # https://IP:PORT of its agent, once it serves
    "python", "burla",  # the agent's Python and burla versions
    "grown_for",  # the job that booted it (grow=True), or None for the cluster's own nodes
    "idle_timeout_s",  # it deletes its VM after this long with no job
    "created_at", "ready_at", "heartbeat_at", "ended_at",
    "runners",  # {job_id: {token, cluster_url}}: detached jobs whose runner this node hosts
    "planned_slots",  # while BOOTING: the calls of the job that grew it it will run at once
)

# --- job documents ---------------------------------------------------------------------------
# The same words as the local job store (burla_core.jobstore), so `burla jobs` reads both alike.
JOB_QUEUED, JOB_RUNNING, JOB_DONE, JOB_FAILED, JOB_CANCELED = "queued", "running", "done", "failed", "canceled"
JOB_FINISHED = frozenset({JOB_DONE, JOB_FAILED, JOB_CANCELED})

JOB_FIELDS = (
    "job_id", "status", "user", "function_name", "detach", "grow",
    "func_cpu", "func_ram", "func_gpu", "image", "region", "disk_gb", "max_parallelism",
    "total", "done", "failed", "running",  # inputs; done/failed are Increment counters
    "created_at", "started_at", "ended_at",
    "last_seen_at",  # the caller's last request about it (a caller that stops asking has gone)
    "caller_address",
    "error",  # {"type_name", "message", "traceback", ...}: why a detached job failed
    "error_index",  # the input whose error ended it
    "cancel_requested",
    "runner_node", "runner_heartbeat_at",  # detached jobs: where their runner runs
    "python_path", "cwd",  # detached jobs: the caller's, for results whose types are the caller's
)

# Detached jobs' data (the cluster's bucket, under jobs/{job_id}/): the pickled JobSpec, the
# inputs in chunks (msgpack lists of [input_index, payload]) and the results in chunks (the same
# shape), each results chunk listed by a jobs/{job_id}/results/{seq:012d} document
# {"seq": its first result's seq, "last_seq", "count", "object"}. Logs: jobs/{job_id}/logs/{seq:012d}
# documents {"seq", "last_seq", "entries": [{"q": seq, "i": input_index, "s": stream, "t": text,
# "w": time}...]} (Firestore has no arrays of arrays). Seqs count from 1.
SPEC_OBJECT = "spec"
RUNNER_LOST_SECONDS = 60.0  # a detached job's runner silent this long is taken for lost


def error_to_document(wire: dict) -> dict:
    """An ErrorInfo's wire dict as Firestore keeps it: frames as maps (Firestore has no arrays of
    arrays); the pickled exception stays bytes (the caller rebuilds it as its own type)."""
    document = {key: value for key, value in wire.items() if key != "frames"}
    document["frames"] = [{"file": f[0], "line": f[1], "function": f[2], "source": f[3]} for f in wire.get("frames") or []]
    return document


def error_to_json(document: dict | None) -> dict | None:
    """The document as the service answers it (JSON): the pickled bytes in base64."""
    if document is None:
        return None
    import base64

    answer = {key: value for key, value in document.items() if key != "pickled"}
    if document.get("pickled"):
        answer["pickled_b64"] = base64.b64encode(document["pickled"]).decode()
    return answer


def error_from_json(answer: dict) -> dict:
    """The wire dict back from the service's answer (burla_core.types.ErrorInfo.from_wire reads it)."""
    import base64

    wire = {key: value for key, value in answer.items() if key not in ("frames", "pickled_b64")}
    wire["frames"] = [[f.get("file", ""), f.get("line", 0), f.get("function", ""), f.get("source", "")]
                      for f in answer.get("frames") or []]
    wire["pickled"] = base64.b64decode(answer["pickled_b64"]) if answer.get("pickled_b64") else None
    return wire


def job_object(job_id: str, name: str) -> str:
    return f"jobs/{job_id}/{name}"


def input_chunk_name(number: int) -> str:
    return f"inputs-{number:06d}"


def result_chunk_name(seq: int) -> str:
    return f"results-{seq:012d}"


def seq_document_id(seq: int) -> str:
    return f"{seq:012d}"


# --- user tokens -----------------------------------------------------------------------------
TOKEN_PREFIX = "burla_"
USER_TOKEN_SECONDS = 30 * 24 * 3600.0  # a token from `burla login` lasts 30 days
TOKEN_KIND_USER = "user"  # from `burla login` or an administrator
TOKEN_KIND_RUNNER = "runner"  # held by the runner of one detached job, revoked when it ends


def new_token() -> str:
    """A fresh user token: the caller keeps it, the cluster keeps only its hash."""
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def token_hash(token: str) -> str:
    """The id of a token's document in `user_tokens`: the hex SHA-256 of the whole token."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


@dataclass
class UserToken:
    """user_tokens/{token_hash}: one token, never its plain text."""

    email: str
    expires_at: float
    created_at: float = field(default_factory=time.time)
    kind: str = TOKEN_KIND_USER
    revoked: bool = False
    job_id: str | None = None  # runner tokens: the job they serve
    label: str = ""  # which machine asked for it ("alice@laptop"), for the dashboard

    def to_document(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_document(cls, data: dict[str, Any]) -> "UserToken":
        known = {f.name for f in fields(cls)}
        return cls(**{key: value for key, value in data.items() if key in known})

    def valid(self, now: float | None = None) -> bool:
        return not self.revoked and (now if now is not None else time.time()) < self.expires_at


# --- users -----------------------------------------------------------------------------------
ROLE_USER, ROLE_ADMIN = "user", "admin"
USER_FIELDS = ("email", "role", "added_at", "added_by")

# --- the config document ---------------------------------------------------------------------
DEFAULT_BOOT_IMAGE = "projects/debian-cloud/global/images/family/debian-12"
# A Deep Learning VM image family with NVIDIA drivers (GCP.md; check it with
# `gcloud compute images describe-from-family` before relying on it).
DEFAULT_GPU_BOOT_IMAGE = "projects/ml-images/global/images/family/common-cu124-debian-11-py310"


@dataclass
class ClusterConfig:
    """cluster/config: what the cluster's nodes are made of and how long they live. `burla
    install` writes it; the dashboard's settings change it; the service reads it per request."""

    machine_type: str = "n2-standard-4"
    container_image: str | None = None  # None: python:X.Y of the caller
    boot_image: str = DEFAULT_BOOT_IMAGE
    gpu_boot_image: str = DEFAULT_GPU_BOOT_IMAGE
    region: str = "us-central1"
    zones: list[str] = field(default_factory=list)  # [] = every zone of the region
    quantity: int = 0  # nodes the cluster keeps booted when started from the dashboard
    idle_timeout_s: float = 600.0  # a node of the cluster deletes its VM after this long idle
    grow_idle_timeout_s: float = 60.0  # ... and a node booted by grow=True after this long
    cpu_quota: int = 64  # the most vCPUs all the cluster's VMs may have at once
    disk_gb: int = 50
    spot: bool = False
    node_port: int = 8701  # 0: any free port (only for the stand-in, where every VM is 127.0.0.1)
    node_package: str = ""  # what the VM pip-installs; "" = burla-open[gcp-node]==<the service's version>
    extra_source_ranges: list[str] = field(default_factory=list)  # admitted besides the callers' addresses
    heartbeat_s: float = 10.0  # how often a node refreshes heartbeat_at
    boot_timeout_s: float = 600.0  # a VM that is not READY after this long is FAILED and deleted
    job_lease_s: float = 30.0  # a node cancels a job whose caller is silent this long

    def to_document(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_document(cls, data: dict[str, Any] | None) -> "ClusterConfig":
        """The config from its document; unknown keys (a newer dashboard's) are ignored and
        missing ones take the defaults, so an older document still works."""
        known = {f.name for f in fields(cls)}
        return cls(**{key: value for key, value in (data or {}).items() if key in known})


# --- sign-in and login: the dashboard's sessions, `burla dashboard` and `burla login` ----------
# One-time values (sign-in codes, login states and codes) are kept only as SHA-256 hashes, like
# tokens; spending one creates used_codes/{hash}, which fails on a replay (Firestore `create`).
SESSIONS = "sessions"  # sessions/{sha256 of the cookie}: a browser's dashboard session (Session)
SIGNIN_CODES = "signin_codes"  # sign-in links from `burla dashboard` and admins' invitations
LOGIN_REQUESTS = "login_requests"  # {sha256 of a `burla login` state}: answered once, then refused
LOGIN_CODES = "login_codes"  # what `burla login` exchanges (with its verifier) for a user token
USED_CODES = "used_codes"  # one-time values already spent
SESSION_SECONDS = 12 * 3600.0  # a dashboard session (the cookie's Max-Age)
SIGNIN_CODE_SECONDS = 120.0  # a sign-in link from `burla dashboard`
INVITE_SECONDS = 7 * 24 * 3600.0  # a sign-in link an admin sends a new user
LOGIN_CODE_SECONDS = 300.0  # from "Authorize" to `burla login` exchanging its code
TOKEN_REFRESH_SECONDS = 7 * 24 * 3600.0  # a caller refreshes its token when it has less than this left


@dataclass
class Session:
    """sessions/{token_hash(cookie)}: who a browser is signed in as. `csrf` must come back with
    every state-changing request the dashboard makes (header X-Burla-CSRF, or a form field)."""

    email: str
    admin: bool
    csrf: str
    expires_at: float
    created_at: float = field(default_factory=time.time)

    def to_document(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_document(cls, data: dict[str, Any]) -> "Session":
        known = {f.name for f in fields(cls)}
        return cls(**{key: value for key, value in data.items() if key in known})

    def valid(self, now: float | None = None) -> bool:
        return (now if now is not None else time.time()) < self.expires_at


# --- what the dashboard shows of a job's inputs ------------------------------------------------
# The caller reports its inputs as they end (service/reports.py): jobs/{job_id}/inputs/{chunk},
# chunk = input_index // INPUTS_PER_CHUNK, {"inputs": {"<index>": {"status", "node", "started_at",
# "ended_at", "output"}}}, so a page of inputs is one document read, and a job of 100,000 inputs
# is 200 documents, each written about once a second at most. jobs/{job_id}/inputs/progress holds
# the completed-over-time samples [{"t", "done", "failed"}, ...] (Firestore has no nested arrays).
JOB_INPUTS = "inputs"
INPUTS_PER_CHUNK = 500
PROGRESS_DOCUMENT = "progress"
INPUT_OUTPUT_CHARS = 4000  # what the dashboard keeps of an input's output (stdout and stderr)
INPUT_DONE, INPUT_FAILED = "done", "failed"

# Fields a node's heartbeat adds for the dashboard: its machine's use, and when it became idle.
NODE_USAGE_FIELDS = ("cpu_percent", "memory_percent", "usage", "idle_since")  # usage: [{"t", "cpu", "memory"}]
NODE_USAGE_SAMPLES = 60
