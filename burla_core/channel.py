"""How payloads cross between a worker pool and its workers: messages, and shared memory for the
big buffers of out-of-band pickles (serialization.OutOfBandPickle).

    pool (caller or node agent)                               forked worker
    ───────────────────────────                               ─────────────
    batch: [index, payload] ──msgpack── pipe ───────────────► decode_payload
           big buffers ──copy──► inbox arena (memfd) ══shared══► copy out ─► loads
    decode_payload ◄──────────── pipe ──msgpack── ["r", job, index, payload]
           copy out ◄══shared══ outbox arena (memfd) ◄──copy── big buffers of the result

A payload inside a message is either plain pickle bytes or `[pickle, [buffer, ...]]`, where a
buffer is `[is_bytes, data]` (inline, through the pipe) or `[is_bytes, offset, size, generation]`
(in the sender's arena). Workers that cannot map memory shared with their pool (a container
speaking the protocol over stdin/stdout) get no arenas and everything goes inline.

An arena is one memfd per direction per worker, made before the worker is forked, so both
processes hold it and no other can: it has no name in /dev/shm, and the kernel frees it when the
last process holding it exits, whether it exited or was SIGKILLed. Arenas keep their pages
between transfers (a write into mapped, resident pages runs at memory speed; fresh pages cost
far more to fault in than to copy into), and the pool gives the pages back once a worker has
moved nothing for ARENA_KEEP_SECONDS.

Who may overwrite what:
- the inbox arena holds the big inputs of the one batch the worker has (the pool never sends a
  worker a second batch before it reported the first done), so each batch starts at offset 0;
- the outbox arena is filled from offset 0 again once the pool has copied out every buffer
  written so far (`released`, a counter in shared memory, reaches the last generation written);
  until then writes go after the ones still unread, and a worker that would need more than
  ARENA_APPEND_LIMIT waits for the pool, up to RELEASE_WAIT_SECONDS, then sends inline.

Receivers always copy buffers out of an arena before anyone sees them (nothing ever points into
an arena once the message is handled): a `bytes` content straight into a `bytes` object, any
other into fresh private memory advised to use huge pages (so a 100 MB numpy array costs one
fast copy, not 25,000 page faults).
"""

from __future__ import annotations

import itertools
import mmap
import os
import sys
import time

from .buffers import bytes_copy, private_buffer
from .serialization import OutOfBandPickle

ALIGN = 64
ARENA_KEEP_SECONDS = 10.0
ARENA_APPEND_LIMIT = 1 << 30
RELEASE_WAIT_SECONDS = 5.0
NAME_PREFIX = "burla-arena"

_names = itertools.count(1)
_open_arenas: set = set()  # every open Arena of this process, closed in forked children (below)
_keep_in_child: set = set()  # the Arenas a worker being forked right now must keep


def arenas_supported() -> bool:
    return hasattr(os, "memfd_create") and sys.platform.startswith("linux")


class Arena:
    """One shared-memory file (memfd) and this process's mapping of it."""

    def __init__(self, fd: int, name: str) -> None:
        self.fd = fd
        self.name = name
        self.map: mmap.mmap | None = None
        self.last_used = time.monotonic()
        self.holds_pages = False  # written or read since the pages were last given back

    @classmethod
    def create(cls, role: str) -> "Arena":
        name = f"{NAME_PREFIX}-{os.getpid()}-{next(_names)}-{role}"
        fd = os.memfd_create(name, os.MFD_CLOEXEC)  # CLOEXEC: a subprocess the function runs gets none
        arena = cls(fd, name)
        _open_arenas.add(arena)
        return arena

    def _mapped(self, size: int) -> mmap.mmap:
        """A mapping covering at least `size` bytes, growing the file when it is smaller."""
        current = self.map
        if current is not None and len(current) >= size:
            return current
        file_size = os.fstat(self.fd).st_size
        if file_size < size:
            file_size = _round_up(size, 1 << 24)
            os.ftruncate(self.fd, file_size)
        if current is not None:
            current.close()  # nothing keeps a view of it: receivers copy out, writers copy in
        self.map = mmap.mmap(self.fd, file_size)
        return self.map

    def write(self, offset: int, buffers: list) -> list[int]:
        """Copy `buffers` in from `offset`; the offset of each."""
        sizes = [memoryview(buffer).nbytes for buffer in buffers]
        offsets = []
        position = offset
        for size in sizes:
            offsets.append(position)
            position = _round_up(position + size, ALIGN)
        mapping = self._mapped(position)
        for buffer, start, size in zip(buffers, offsets, sizes):
            mapping[start : start + size] = buffer  # flat byte buffers (PickleBuffer.raw())
        self.last_used = time.monotonic()
        self.holds_pages = True
        return offsets

    def copy_out(self, offset: int, size: int, is_bytes: bool):
        """A private copy of `size` bytes at `offset`: `bytes`, or a writable memoryview."""
        mapping = self._mapped(offset + size)
        self.last_used = time.monotonic()
        self.holds_pages = True
        with memoryview(mapping) as view:
            region = view[offset : offset + size]
            try:
                if is_bytes:
                    return bytes_copy(region)
                target = private_buffer(size)
                target[:] = region
                return target
            finally:
                region.release()

    def give_back_pages(self) -> None:
        """Free the pages (the file keeps its size; the next transfer faults them in again)."""
        self.holds_pages = False
        if self.map is not None and hasattr(mmap, "MADV_REMOVE"):
            try:
                self.map.madvise(mmap.MADV_REMOVE)
            except OSError:
                pass

    def close(self) -> None:
        if self.map is not None:
            try:
                self.map.close()
            except BufferError:  # cannot happen (nothing keeps views); never leak the fd over it
                pass
            self.map = None
        _open_arenas.discard(self)
        if self.fd >= 0:
            try:
                os.close(self.fd)
            except OSError:
                pass
            self.fd = -1


def _round_up(value: int, step: int) -> int:
    return (value + step - 1) // step * step


class ArenaPair:
    """A worker's two arenas and the shared release counter, as both sides hold them."""

    def __init__(self, inbox: Arena, outbox: Arena, released) -> None:
        self.inbox = inbox  # the pool writes, the worker reads
        self.outbox = outbox  # the worker writes, the pool reads
        self.released = released  # a shared int: the last outbox generation the pool copied out
        self.generation = 0  # worker side: the last outbox generation written
        self.top = 0  # worker side: where the next outbox write goes

    @classmethod
    def create(cls, raw_value) -> "ArenaPair":
        return cls(Arena.create("in"), Arena.create("out"), raw_value("q", 0))

    def idle_for(self, now: float) -> float:
        return now - max(self.inbox.last_used, self.outbox.last_used)

    @property
    def holds_pages(self) -> bool:
        return self.inbox.holds_pages or self.outbox.holds_pages

    def give_back_pages(self) -> None:
        self.inbox.give_back_pages()
        self.outbox.give_back_pages()

    def close(self) -> None:
        self.inbox.close()
        self.outbox.close()


# --- the pool's side ---------------------------------------------------------------------------


def encode_inputs(items: list, arenas: ArenaPair | None) -> list:
    """A batch's [index, payload] items for the message, big buffers placed in the inbox arena
    (from offset 0: the worker is done with its previous batch)."""
    if not any(type(payload) is OutOfBandPickle for _, payload in items):
        return items
    encoded = []
    offset = 0
    for input_index, payload in items:
        if type(payload) is OutOfBandPickle:
            if arenas is None:
                payload = _inline(payload)
            else:
                payload, offset = _place(payload, arenas.inbox, offset, 0)
        encoded.append([input_index, payload])
    return encoded


def decode_result(payload, arenas: ArenaPair | None):
    """A result payload as the message carried it, copied out of the outbox arena: (payload,
    the last arena generation it used, or 0)."""
    if type(payload) is not list:
        return payload, 0
    return _decode(payload, arenas, "out")


# --- the worker's side -------------------------------------------------------------------------


def decode_input(payload, arenas: ArenaPair | None):
    if type(payload) is not list:
        return payload
    return _decode(payload, arenas, "in")[0]


def encode_result(payload, arenas: ArenaPair | None, flush) -> object:
    """A result payload for the message. `flush()` sends what is queued (so that the pool can
    copy it out and release the arena) before a write that has to wait for room."""
    if type(payload) is not OutOfBandPickle:
        return payload
    if arenas is None:
        return _inline(payload)
    if arenas.released.value == arenas.generation:
        arenas.top = 0  # the pool copied out everything written so far
    elif arenas.top + len(payload) > ARENA_APPEND_LIMIT:
        flush()
        deadline = time.monotonic() + RELEASE_WAIT_SECONDS
        while arenas.released.value != arenas.generation:
            if time.monotonic() > deadline:
                return _inline(payload)  # the pool is not reading: never wait forever
            time.sleep(0.001)
        arenas.top = 0
    try:
        encoded, top = _place(payload, arenas.outbox, arenas.top, arenas.generation + 1)
    except OSError:  # no memory for the arena to grow: the pipe still works
        return _inline(payload)
    arenas.generation += 1
    arenas.top = top
    return encoded


# --- both --------------------------------------------------------------------------------------


def _inline(payload: OutOfBandPickle) -> list:
    return [payload.data, [[is_bytes, buffer] for buffer, is_bytes in zip(payload.buffers, payload.is_bytes)]]


def _place(payload: OutOfBandPickle, arena: Arena, offset: int, generation: int) -> tuple[list, int]:
    offsets = arena.write(offset, payload.buffers)
    descriptors = []
    end = offset
    for buffer, is_bytes, start in zip(payload.buffers, payload.is_bytes, offsets):
        size = memoryview(buffer).nbytes
        descriptors.append([is_bytes, start, size, generation])
        end = _round_up(start + size, ALIGN)
    return [payload.data, descriptors], end


def _decode(payload: list, arenas: ArenaPair | None, direction: str) -> tuple[OutOfBandPickle, int]:
    data, descriptors = payload
    buffers, is_bytes_list = [], []
    generation = 0
    for descriptor in descriptors:
        is_bytes = bool(descriptor[0])
        if len(descriptor) == 2:
            buffer = descriptor[1]
        else:
            if arenas is None:
                raise ValueError("a payload refers to shared memory this worker does not have")
            _, offset, size, generation = descriptor
            arena = arenas.inbox if direction == "in" else arenas.outbox
            buffer = arena.copy_out(offset, size, is_bytes)
        buffers.append(buffer)
        is_bytes_list.append(is_bytes)
    return OutOfBandPickle(data, buffers, is_bytes_list), generation


# A forked child keeps only the arenas handed to it (their fds and the parent's mappings are
# inherited too): a sibling holding another worker's arena would keep that memory alive after
# its worker and pool are done with it.


def forking_worker(arenas: ArenaPair | None) -> None:
    """Call just before forking the worker that gets `arenas` (None: a fork that gets none)."""
    _keep_in_child.clear()
    if arenas is not None:
        _keep_in_child.update((arenas.inbox, arenas.outbox))


def _close_others_in_child() -> None:
    for arena in list(_open_arenas):
        if arena not in _keep_in_child:
            arena.close()
    _keep_in_child.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_close_others_in_child)
