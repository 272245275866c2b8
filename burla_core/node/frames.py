"""The node protocol's binary formats: frames (the event stream), batch bodies, out-of-band
payloads, written as pieces without copying big payloads and read back as views. The paths,
messages and their checks are in protocol.py."""

from __future__ import annotations

from typing import Any

import msgpack

from ..buffers import bytes_copy, private_buffer
from ..serialization import OutOfBandPickle
from .protocol import FRAME_HEADER, ProtocolError, require, unpack_body

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
