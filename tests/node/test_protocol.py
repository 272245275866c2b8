"""The wire format: frames and batch bodies round-trip, and bad ones are named precisely."""

from __future__ import annotations

import os

import pytest

from burla_core.node.frames import decode_batch, decode_frame_body, encode_batch, encode_frame, slices
from burla_core.node.protocol import FRAME_HEADER, ProtocolError, bearer_matches, version_mismatch


def frame_body(pieces: list) -> bytes:
    whole = b"".join(bytes(piece) for piece in pieces)
    (length,) = FRAME_HEADER.unpack(whole[:4])
    assert length == len(whole) - 4, "the frame header must count every piece"
    return whole[4:]


@pytest.mark.parametrize("size", [0, 1, 255, 256, 65535, 65536, 65537, 300_000])
def test_results_frames_round_trip_at_every_bin_header_size(size):
    payload = os.urandom(size)
    data = [[2**40, payload], [7, b"small"], [0, b""]]
    for seq in (1, 127, 128, 65536, 2**33):
        decoded = decode_frame_body(frame_body(encode_frame(seq, "results", data)))
        assert decoded[0] == seq and decoded[1] == "results"
        assert [[index, bytes(value)] for index, value in decoded[2]] == data


def test_big_results_are_written_as_pieces_of_their_own_and_decoded_without_a_copy():
    payload = os.urandom(200_000)
    pieces = encode_frame(5, "results", [[3, payload]])
    assert any(piece is payload for piece in pieces), "a big payload must not be copied into the frame"
    decoded = decode_frame_body(bytearray(frame_body(pieces)))
    assert isinstance(decoded[2][0][1], memoryview) and decoded[2][0][1] == payload


def test_other_frames_round_trip():
    for kind, data in [("logs", [[1, 1, "hello\n"], [2, 2, "err\n"]]), ("error", [4, {"message": "x", "pickled": None}]),
                       ("notice", "text"), ("hb", None), ("hello", {"instance": "abc", "last_seq": 9})]:
        assert decode_frame_body(frame_body(encode_frame(3, kind, data))) == [3, kind, data]


def test_batches_round_trip_without_copying_payloads():
    items = [(0, b"a"), (5, os.urandom(100_000)), (9, b"")]
    body = bytearray(b"".join(bytes(piece) for piece in encode_batch(42, items)))
    batch_id, decoded, size = decode_batch(body)
    assert batch_id == 42 and size == sum(len(p) for _, p in items)
    assert [(index, bytes(view)) for index, view in decoded] == items
    assert all(isinstance(view, memoryview) for _, view in decoded)


@pytest.mark.parametrize(
    "body, words",
    [
        (b"", "4-byte header"),
        (FRAME_HEADER.pack(100) + b"{}", "header declares"),
        (FRAME_HEADER.pack(1) + b"\xc1", "msgpack"),
    ],
)
def test_broken_batch_bodies_are_named(body, words):
    with pytest.raises(ProtocolError, match=words):
        decode_batch(body)


def test_slices_cut_big_pieces_and_join_small_ones():
    big = b"x" * (3 * 2**20 + 5)
    pieces = [b"a", b"b", big, b"c"]
    out = [bytes(piece) for piece in slices(pieces)]
    assert b"".join(out) == b"".join(pieces)
    assert max(len(piece) for piece in out) <= 2**20


def test_bearer_token_comparison():
    assert bearer_matches("Bearer secret", "secret")
    assert not bearer_matches("Bearer secreT", "secret")
    assert not bearer_matches("secret", "secret")
    assert not bearer_matches(None, "secret")
    assert not bearer_matches("Bearer ", "secret")


def test_version_mismatch_names_both_versions():
    assert version_mismatch("3.11.7", "0.1.0", "3.11.2", "0.1.0") is None
    text = version_mismatch("3.11.7", "0.1.0", "3.12.1", "0.2.0")
    assert "3.11.7" in text and "3.12.1" in text and "0.1.0" in text and "0.2.0" in text


def _out_of_band(*buffers, is_bytes=None):
    from burla_core.serialization import OutOfBandPickle

    return OutOfBandPickle(b"the pickle", list(buffers), is_bytes or [True] * len(buffers))


@pytest.mark.parametrize("keep_views", [True, False])
@pytest.mark.parametrize("size", [10, 70_000, 2_000_000])
def test_results_with_out_of_band_buffers_round_trip(size, keep_views):
    from burla_core.serialization import OutOfBandPickle

    first, second = os.urandom(size), os.urandom(size + 3)
    data = [[4, _out_of_band(first, second, is_bytes=[True, False])], [5, b"plain"]]
    pieces = encode_frame(8, "results", data)
    if size >= 70_000:
        assert any(piece is first for piece in pieces), "a big buffer must be a piece of its own, not copied"
    seq, kind, (entry, plain) = decode_frame_body(bytearray(frame_body(pieces)), keep_views=keep_views)
    assert (seq, kind, plain[0], bytes(plain[1])) == (8, "results", 5, b"plain")
    index, payload = entry
    assert index == 4 and type(payload) is OutOfBandPickle and bytes(payload.data) == b"the pickle"
    assert payload.is_bytes == [True, False]
    assert type(payload.buffers[0]) is bytes and payload.buffers[0] == first, "a bytes content must arrive as bytes"
    assert bytes(payload.buffers[1]) == second


def test_batches_carry_out_of_band_inputs():
    from burla_core.serialization import OutOfBandPickle

    big = os.urandom(300_000)
    items = [(0, b"plain"), (1, _out_of_band(big, b"xy", is_bytes=[True, False])), (2, b"")]
    body = bytearray(b"".join(bytes(piece) for piece in encode_batch(7, items)))
    batch_id, decoded, size = decode_batch(body)
    assert batch_id == 7 and size == len(body) - 4 - FRAME_HEADER.unpack(body[:4])[0]
    assert bytes(decoded[0][1]) == b"plain" and bytes(decoded[2][1]) == b""
    payload = decoded[1][1]
    assert type(payload) is OutOfBandPickle and bytes(payload.data) == b"the pickle" and payload.is_bytes == [True, False]
    assert [bytes(buffer) for buffer in payload.buffers] == [big, b"xy"]
    assert all(isinstance(buffer, memoryview) for buffer in payload.buffers), "inputs must not be copied on the node"


@pytest.mark.parametrize("buffers, words", [([], "non-empty"), ([[1, 5]], "is_bytes, size"), ([[True, -1]], "buffer size"), ([[True, 10**9]], "more payload")])
def test_broken_out_of_band_items_are_named(buffers, words):
    import msgpack

    head = msgpack.packb({"batch_id": 1, "items": [[0, 2, buffers]]}, use_bin_type=True)
    with pytest.raises(ProtocolError, match=words):
        decode_batch(FRAME_HEADER.pack(len(head)) + head + b"ab")
