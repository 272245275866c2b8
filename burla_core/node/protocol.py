"""What travels between the caller and a node agent, shared by both ends.

Every request carries `Authorization: Bearer <token>`. Bodies that carry payloads are msgpack
maps; small answers (health, errors, acknowledgements) are JSON so that `curl` can read them.

    GET    /v1/health                          JSON: slots, CPUs, RAM, GPUs, image, versions
    POST   /v1/jobs                            msgpack JobRequest → JSON {job_id, slots}
                                               (with the caller's packages and local code:
                                               "environment" and "code", see encode_job_environment)
    GET    /v1/jobs                            JSON: the jobs on this node (re-attach, `burla node jobs`)
    GET    /v1/jobs/{job}                      JSON: one job's status and counts
    POST   /v1/jobs/{job}/batches              a batch body (below)
                                               202 taken; 200 duplicate; 429 + Retry-After when full
    GET    /v1/jobs/{job}/events?after=SEQ     a stream of frames: every event after SEQ, then live
    POST   /v1/jobs/{job}/ack?seq=SEQ          the caller has every event up to SEQ: drop them
    POST   /v1/jobs/{job}/cancel               stop running calls, drop queued inputs
    DELETE /v1/jobs/{job}                      cancel and forget the job; answers once it stopped

A job request is a msgpack map with the fields of `JobRequest` (decode_job_request checks each).

A batch body is a 4-byte big-endian length, a msgpack map {batch_id, items: [[index, size], ...]}
of that length, then the pickled inputs themselves, back to back, `size` bytes each. Inputs travel
as they are, never copied into a msgpack document, so a 100 MB input costs one read on the node.
An input pickled with out-of-band buffers (serialization.OutOfBandPickle) is the item
`[index, size, [[is_bytes, buffer_size], ...]]`: its `size` bytes of pickle, then its buffers.

A frame is a 4-byte big-endian length and a msgpack list `[seq, kind, data]`. In a results frame,
data is `[[index, pickle], ...]`, or `[index, pickle, [[is_bytes, buffer], ...]]` for a result
with out-of-band buffers; big pickles and buffers are written as they are, as the msgpack `bin`
objects they are (no copy), and read back as views of the received frame. Events of the job
have seq 1, 2, 3, ... with the kinds of burla_core.types (results, logs, error, notice); frames
with seq 0 carry no event: "hello" opens every stream (the agent's instance id and the last seq),
"hb" is a heartbeat sent when nothing else was for HEARTBEAT_SECONDS.
"""

from __future__ import annotations

import hmac
import importlib.metadata
import platform
import re
import struct
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import msgpack

if TYPE_CHECKING:
    from ..envsync.job import JobEnvironment

API_PREFIX = "/v1"
FRAME_HEADER = struct.Struct(">I")
MAX_FRAME_BYTES = 1 << 31  # a frame can carry a result up to the size limit of one input
MAX_REQUEST_BYTES = 512 * 1000 * 1000  # a batch body; one input is at most 200 MB pickled
# The function is at most 100 MB pickled, and its local code at most 100 MB more.
MAX_JOB_REQUEST_BYTES = 256 * 1000 * 1000
HEARTBEAT_SECONDS = 1.0
FRAMES_CONTENT_TYPE = "application/x-burla-frames"
MSGPACK_CONTENT_TYPE = "application/msgpack"

# Frame kinds with seq 0 (not job events).
HELLO = "hello"
HEARTBEAT = "hb"

PACKAGES_REPORTED = ("burla-open", "cloudpickle", "msgpack", "multiprocess", "aiohttp")


class ProtocolError(ValueError):
    """A message that does not follow this protocol; the text says what is wrong with it."""


def unpack_body(body: bytes, what: str) -> dict:
    """A request body as a msgpack map; anything else is a ProtocolError naming `what`."""
    try:
        value = msgpack.unpackb(body, raw=False, use_list=True, strict_map_key=True)
    except (ValueError, msgpack.ExtraData, msgpack.FormatError, msgpack.StackError, TypeError) as error:
        raise ProtocolError(f"the {what} is not valid msgpack ({type(error).__name__}: {error})") from None
    if not isinstance(value, dict):
        raise ProtocolError(f"the {what} must be a msgpack map, not {type(value).__name__}")
    return value


def require(message: dict, key: str, kinds: type | tuple, what: str, optional: bool = False) -> Any:
    value = message.get(key)
    if value is None and optional:
        return None
    if not isinstance(value, kinds) or (isinstance(value, bool) and kinds in (int, (int,))):
        expected = kinds.__name__ if isinstance(kinds, type) else " or ".join(k.__name__ for k in kinds)
        raise ProtocolError(f"{what}: {key!r} must be {expected}, got {type(value).__name__}")
    return value


def bearer_matches(header: str | None, token: str) -> bool:
    """Compare in constant time, so that response times say nothing about the token."""
    given = header or ""
    prefix = "Bearer "
    supplied = given[len(prefix):] if given.startswith(prefix) else ""
    return hmac.compare_digest(supplied.encode("utf-8", "surrogateescape"), token.encode("utf-8", "surrogateescape"))


def python_version() -> str:
    return platform.python_version()


def python_feature_version(version: str) -> str:
    """"3.11.7" -> "3.11": pickles of code travel between patch releases, not feature releases."""
    return ".".join(version.split(".")[:2])


def burla_version() -> str:
    from burla_core import __version__

    return __version__


def package_versions() -> dict[str, str]:
    versions = {}
    for name in PACKAGES_REPORTED:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def version_mismatch(caller_python: str, caller_burla: str, node_python: str, node_burla: str) -> str | None:
    """A sentence naming both versions when caller and node cannot run each other's pickles."""
    problems = []
    if python_feature_version(caller_python) != python_feature_version(node_python):
        problems.append(f"the caller runs Python {caller_python} but the node runs Python {node_python}")
    if caller_burla != node_burla:
        problems.append(f"the caller runs burla {caller_burla} but the node runs burla {node_burla}")
    if not problems:
        return None
    return "; ".join(problems) + ". Install the same Python feature release and burla version on both."


JOB_ID_PATTERN = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
PARENT_JOB_ENV = "BURLA_PARENT_JOB"  # set in a node's workers: a job they start names its parent
ENV_NAME_PATTERN = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")
MAX_NESTED_ENV = 64


@dataclass
class JobRequest:
    """POST /v1/jobs: a job for a node, every field checked by decode_job_request."""

    job_id: str
    function: bytes
    function_name: str
    slots: int
    func_cpu: int
    func_ram: int
    func_gpu: str | None
    image: str | None
    python: str
    burla: str
    nested_env: dict[str, str] = field(default_factory=dict)  # for calls the function makes itself
    parent_job: str | None = None  # set when a call of another job started this one (a nested call)


def decode_job_request(message: dict) -> JobRequest:
    what = "job request"
    job_id = require(message, "job_id", str, what)
    if not JOB_ID_PATTERN.match(job_id):
        raise ProtocolError("job request: 'job_id' must be 1-64 letters, digits, '_', '.' or '-'")
    function_bytes = require(message, "function", bytes, what)
    if not function_bytes:
        raise ProtocolError("job request: 'function' is empty")
    request = JobRequest(
        job_id=job_id,
        function=function_bytes,
        function_name=require(message, "function_name", str, what, optional=True) or "function",
        slots=require(message, "slots", int, what),
        func_cpu=require(message, "func_cpu", int, what),
        func_ram=require(message, "func_ram", int, what),
        func_gpu=require(message, "func_gpu", str, what, optional=True),
        image=require(message, "image", str, what, optional=True),
        python=require(message, "python", str, what),
        burla=require(message, "burla", str, what),
    )
    if request.slots < 1 or request.func_cpu < 1 or request.func_ram < 1:
        raise ProtocolError("job request: 'slots', 'func_cpu' and 'func_ram' must be >= 1")
    nested = message.get("nested_env") or {}
    if not isinstance(nested, dict) or len(nested) > MAX_NESTED_ENV:
        raise ProtocolError(f"job request: 'nested_env' must be a map of at most {MAX_NESTED_ENV} variables")
    for name, value in nested.items():
        if not (isinstance(name, str) and ENV_NAME_PATTERN.match(name) and isinstance(value, str) and len(value) <= 65536):
            raise ProtocolError(f"job request: 'nested_env' entry {str(name)[:40]!r} is not NAME=string")
    request.nested_env = dict(nested)
    parent = require(message, "parent_job", str, what, optional=True)
    if parent is not None and not JOB_ID_PATTERN.match(parent):
        raise ProtocolError("job request: 'parent_job' must be a job id")
    request.parent_job = parent
    return request


# --- the caller's environment in a job request ------------------------------------------------


def encode_job_environment(environment: "JobEnvironment") -> dict:
    """The fields a job request carries for environment sync (burla_core.envsync)."""
    packages, code = environment.packages, environment.code
    fields: dict[str, Any] = {"environment": None, "code": None}
    if packages is not None:
        fields["environment"] = {
            "python": packages.python,
            "requirements": [[r.name, r.version, r.url] for r in packages.requirements],
            "index_url": packages.index.index_url,
            "extra_index_urls": list(packages.index.extra_index_urls),
            "find_links": list(packages.index.find_links),
        }
    if code is not None:
        fields["code"] = {"digest": code.digest, "modules": list(code.modules), "data": code.data}
    return fields


def _strings(value: Any, what: str, limit: int = 4096) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(item, str) and 0 < len(item) <= limit for item in value):
        raise ProtocolError(f"{what} must be a list of strings")
    return tuple(value)


def decode_job_environment(message: dict) -> "JobEnvironment":
    from ..envsync.description import EnvironmentDescription, PackageIndex, Requirement
    from ..envsync.job import JobEnvironment
    from ..envsync.localcode import CodeBundle

    what = "job request"
    packages = None
    environment = require(message, "environment", dict, what, optional=True)
    if environment is not None:
        what = "job request 'environment'"
        python = require(environment, "python", str, what)
        requirements = []
        for entry in require(environment, "requirements", list, what):
            if not (
                isinstance(entry, list) and len(entry) == 3 and all(isinstance(part, str) and part for part in entry[:2])
                and (entry[2] is None or isinstance(entry[2], str))
            ):
                raise ProtocolError(f"{what}: each requirement must be [name, version, url or None]")
            if any(character in entry[0] + entry[1] for character in " \n;@=<>"):
                raise ProtocolError(f"{what}: requirement {entry[0]!r}=={entry[1]!r} is not a name and a version")
            requirements.append(Requirement(entry[0], entry[1], entry[2]))
        index = PackageIndex(
            require(environment, "index_url", str, what, optional=True),
            _strings(environment.get("extra_index_urls") or [], f"{what}: 'extra_index_urls'"),
            _strings(environment.get("find_links") or [], f"{what}: 'find_links'"),
        )
        packages = EnvironmentDescription(python, tuple(requirements), index)
    code = None
    fields = require(message, "code", dict, "job request", optional=True)
    if fields is not None:
        what = "job request 'code'"
        digest = require(fields, "digest", str, what)
        if not (len(digest) == 64 and all(c in "0123456789abcdef" for c in digest)):
            raise ProtocolError(f"{what}: 'digest' must be a sha256 in hex")
        modules = _strings(require(fields, "modules", list, what), f"{what}: 'modules'", limit=256)
        if not all(name.isidentifier() for name in modules):
            raise ProtocolError(f"{what}: 'modules' must be module names")
        code = CodeBundle(digest, modules, require(fields, "data", bytes, what))
    return JobEnvironment(packages, code)
