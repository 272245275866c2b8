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

from ..buffers import bytes_copy, private_buffer
from ..serialization import OutOfBandPickle

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


BIG_PIECE_BYTES = 64 * 1024  # payloads this big are written as they are, not copied into a frame
WRITE_SLICE_BYTES = 1 << 20  # big bodies go to the socket in slices (asyncio copies what waits)
BATCH_CONTENT_TYPE = "application/x-burla-batch"


def _bin_header(size: int) -> bytes:
    if size < 1 << 8:
        return b"\xc4" + size.to_bytes(1, "big")
    if size < 1 << 16:
        return b"\xc5" + size.to_bytes(2, "big")
    return b"\xc6" + size.to_bytes(4, "big")


def _bin_pieces(pieces: list, data) -> None:
    """`data` as a msgpack bin: small ones copied in, big ones as a piece of their own."""
    size = memoryview(data).nbytes
    if size >= BIG_PIECE_BYTES:
        pieces.append(_bin_header(size))
        pieces.append(data)
    else:
        pieces.append(_bin_header(size) + bytes(data))


def encode_frame(seq: int, kind: str, data: Any) -> list:
    """A frame as a list of pieces to write one after the other. Results bigger than
    BIG_PIECE_BYTES, and out-of-band buffers, are pieces of their own: the same msgpack bytes,
    without copying them."""
    if kind == "results" and any(type(entry[1]) is OutOfBandPickle or len(entry[1]) >= BIG_PIECE_BYTES for entry in data):
        packer = msgpack.Packer(use_bin_type=True)
        pieces: list = [packer.pack_array_header(3) + packer.pack(seq) + packer.pack(kind) + packer.pack_array_header(len(data))]
        for input_index, payload in data:
            if type(payload) is OutOfBandPickle:
                pieces.append(packer.pack_array_header(3) + packer.pack(input_index))
                _bin_pieces(pieces, payload.data)
                pieces.append(packer.pack_array_header(len(payload.buffers)))
                for buffer, is_bytes in zip(payload.buffers, payload.is_bytes):
                    pieces.append(packer.pack_array_header(2) + packer.pack(bool(is_bytes)))
                    _bin_pieces(pieces, buffer)
            elif len(payload) >= BIG_PIECE_BYTES:
                pieces.append(packer.pack_array_header(2) + packer.pack(input_index) + _bin_header(len(payload)))
                pieces.append(payload)
            else:
                pieces.append(packer.pack([input_index, payload]))
        return [FRAME_HEADER.pack(sum(len(piece) for piece in pieces))] + pieces
    body = msgpack.packb([seq, kind, data], use_bin_type=True)
    return [FRAME_HEADER.pack(len(body)) + body]


def encode_batch(batch_id: int, items: list) -> list:
    """A batch upload body as pieces: header, then each pickled input as it is (an out-of-band
    pickle: its pickle, then its buffers)."""
    described = []
    payloads = []
    for index, payload in items:
        if type(payload) is OutOfBandPickle:
            sizes = [[bool(is_bytes), memoryview(buffer).nbytes] for buffer, is_bytes in zip(payload.buffers, payload.is_bytes)]
            described.append([index, len(payload.data), sizes])
            payloads.append(payload.data)
            payloads.extend(payload.buffers)
        else:
            described.append([index, len(payload)])
            payloads.append(payload)
    head = msgpack.packb({"batch_id": batch_id, "items": described}, use_bin_type=True)
    return [FRAME_HEADER.pack(len(head)) + head] + payloads


def decode_batch(body: bytearray | bytes) -> tuple[int, list, int]:
    """(batch_id, [(input_index, payload memoryview)], payload bytes) of a batch body, every field
    checked: a ProtocolError says what is wrong."""
    if len(body) < FRAME_HEADER.size:
        raise ProtocolError("batch: the body is shorter than its 4-byte header")
    (head_size,) = FRAME_HEADER.unpack_from(body)
    head_end = FRAME_HEADER.size + head_size
    if head_end > len(body):
        raise ProtocolError(f"batch: the header declares {head_size} bytes but the body has {len(body) - FRAME_HEADER.size}")
    head = unpack_body(bytes(body[FRAME_HEADER.size : head_end]), "batch header")
    batch_id = require(head, "batch_id", int, "batch")
    entries = require(head, "items", list, "batch")
    if batch_id < 0:
        raise ProtocolError("batch: 'batch_id' must be >= 0")
    if not entries:
        raise ProtocolError("batch: 'items' is empty")
    view = memoryview(body)
    position = head_end

    def take(size, number: int, what: str) -> memoryview:
        nonlocal position
        if type(size) is not int or size < 0:
            raise ProtocolError(f"batch: item {number} has {what} {size!r}, not an int >= 0")
        if position + size > len(body):
            raise ProtocolError(f"batch: the items declare more payload bytes than the body carries ({len(body) - head_end})")
        position += size
        return view[position - size : position]

    items = []
    for number, entry in enumerate(entries):
        if not (isinstance(entry, list) and len(entry) in (2, 3)):
            raise ProtocolError(f"batch: item {number} must be [input_index, size] or [input_index, size, buffers]")
        input_index = entry[0]
        if type(input_index) is not int or input_index < 0:
            raise ProtocolError(f"batch: item {number} has input_index {input_index!r}, not an int >= 0")
        payload = take(entry[1], number, "size")
        if len(entry) == 3:
            described = entry[2]
            if not (isinstance(described, list) and described and all(isinstance(b, list) and len(b) == 2 and isinstance(b[0], bool) for b in described)):
                raise ProtocolError(f"batch: item {number}'s buffers must be a non-empty list of [is_bytes, size]")
            buffers = [take(size, number, "a buffer size") for _, size in described]
            payload = OutOfBandPickle(payload, buffers, [is_bytes for is_bytes, _ in described])
        items.append((input_index, payload))
    if position != len(body):
        raise ProtocolError(f"batch: {len(body) - position} bytes follow the last item's payload")
    return batch_id, items, position - head_end


def slices(pieces: list, size: int = WRITE_SLICE_BYTES):
    """The pieces again, big ones cut into `size` slices (views, no copies), small ones joined."""
    pending: list = []
    pending_bytes = 0
    for piece in pieces:
        if len(piece) >= size:
            if pending:
                yield b"".join(pending)
                pending, pending_bytes = [], 0
            view = memoryview(piece)
            for start in range(0, len(view), size):
                yield view[start : start + size]
            continue
        pending.append(piece)
        pending_bytes += len(piece)
        if pending_bytes >= size:
            yield b"".join(pending)
            pending, pending_bytes = [], 0
    if pending:
        yield b"".join(pending)


class _NotInPlace(Exception):
    """The frame is not a results frame of the simple shape decoded in place."""


def _read_uint(view: memoryview, pos: int) -> tuple[int, int]:
    tag = view[pos]
    if tag <= 0x7F:
        return tag, pos + 1
    width = {0xCC: 1, 0xCD: 2, 0xCE: 4, 0xCF: 8}.get(tag)
    if width is None:
        raise _NotInPlace
    return int.from_bytes(view[pos + 1 : pos + 1 + width], "big"), pos + 1 + width


def _read_header(view: memoryview, pos: int, fixed: int, fixed_mask: int, wide: dict) -> tuple[int, int]:
    tag = view[pos]
    if tag & ~fixed_mask & 0xFF == fixed:
        return tag & fixed_mask, pos + 1
    width = wide.get(tag)
    if width is None:
        raise _NotInPlace
    return int.from_bytes(view[pos + 1 : pos + 1 + width], "big"), pos + 1 + width


def _decode_results_in_place(body, keep_views: bool) -> list:
    """[seq, "results", [[index, payload], ...]] with big payloads as views of `body` (a 100 MB
    result is not copied again on its way to the caller), or, unless `keep_views`, copies."""
    view = memoryview(body)
    count, pos = _read_header(view, 0, 0x90, 0x0F, {0xDC: 2, 0xDD: 4})
    if count != 3:
        raise _NotInPlace
    seq, pos = _read_uint(view, pos)
    size, pos = _read_header(view, pos, 0xA0, 0x1F, {0xD9: 1, 0xDA: 2, 0xDB: 4})
    if bytes(view[pos : pos + size]) != b"results":
        raise _NotInPlace
    entries, pos = _read_header(view, pos + size, 0x90, 0x0F, {0xDC: 2, 0xDD: 4})
    arrays = {0xDC: 2, 0xDD: 4}

    def read_bin(pos: int) -> tuple[memoryview, int]:
        width = {0xC4: 1, 0xC5: 2, 0xC6: 4}.get(view[pos])
        if width is None:
            raise _NotInPlace
        size = int.from_bytes(view[pos + 1 : pos + 1 + width], "big")
        pos += 1 + width
        if pos + size > len(view):
            raise ProtocolError("a results frame is shorter than its payloads")
        return view[pos : pos + size], pos + size

    results = []
    for _ in range(entries):
        length, pos = _read_header(view, pos, 0x90, 0x0F, arrays)
        if length not in (2, 3):
            raise _NotInPlace
        input_index, pos = _read_uint(view, pos)
        payload, pos = read_bin(pos)
        if length == 3:
            count, pos = _read_header(view, pos, 0x90, 0x0F, arrays)
            buffers, is_bytes_list = [], []
            for _ in range(count):
                pair, pos = _read_header(view, pos, 0x90, 0x0F, arrays)
                if pair != 2 or view[pos] not in (0xC2, 0xC3):
                    raise _NotInPlace
                is_bytes = view[pos] == 0xC3
                buffer, pos = read_bin(pos + 1)
                buffers.append(buffer)
                is_bytes_list.append(is_bytes)
            results.append([input_index, _received_payload(bytes(payload), buffers, is_bytes_list, keep_views)])
        else:
            results.append([input_index, payload if keep_views and len(payload) >= BIG_PIECE_BYTES else bytes(payload)])
    if pos != len(view):
        raise _NotInPlace
    return [seq, "results", results]


def _received_payload(data, buffers: list, is_bytes_list: list, keep_views: bool = True) -> OutOfBandPickle:
    """An out-of-band result as received: the contents of bytes objects become bytes now, while
    their views are still writable (the fast copy needs that); the rest stay views, unless
    `keep_views` is false (the frame's buffer is about to be reused)."""
    kept = []
    for buffer, is_bytes in zip(buffers, is_bytes_list):
        if isinstance(buffer, bytes):
            pass
        elif is_bytes:
            buffer = bytes_copy(buffer)
        elif not keep_views:
            copy = private_buffer(buffer.nbytes)
            copy[:] = buffer
            buffer = copy
        kept.append(buffer)
    return OutOfBandPickle(data, kept, is_bytes_list)


def decode_frame_body(body: bytes | bytearray | memoryview, keep_views: bool = True) -> list:
    """A frame's [seq, kind, data]. With `keep_views`, big payloads are views of `body`; without,
    nothing refers to `body` afterwards (it may be reused for the next frame)."""
    if len(body) >= BIG_PIECE_BYTES:
        try:
            return _decode_results_in_place(body, keep_views)
        except (_NotInPlace, IndexError):
            pass
    frame = msgpack.unpackb(body, raw=False, use_list=True)
    if not (isinstance(frame, list) and len(frame) == 3 and isinstance(frame[0], int) and isinstance(frame[1], str)):
        raise ProtocolError("a frame must be [seq, kind, data]")
    if frame[1] == "results" and isinstance(frame[2], list):
        for entry in frame[2]:
            if isinstance(entry, list) and len(entry) == 3:
                try:
                    entry[1:] = [_received_payload(entry[1], [b for _, b in entry[2]], [bool(i) for i, _ in entry[2]])]
                except (TypeError, ValueError):
                    raise ProtocolError("a result with buffers must be [index, pickle, [[is_bytes, buffer], ...]]") from None
    return frame


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
