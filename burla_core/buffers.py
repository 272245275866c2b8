"""Fresh private memory for big buffers that arrive from elsewhere (shared memory, a socket).

Copying 100 MB into memory already mapped runs at ~6 GB/s here; copying it into fresh memory
costs several times that, because the kernel faults the fresh 4 KiB pages in one by one. Huge
pages (2 MiB) cut the faults 512-fold, but the kernel uses them only where asked
(`transparent_hugepage` set to `madvise`, the common default). So a received buffer goes into
memory advised to use them before it is first touched:

- `private_buffer(size)`: an anonymous private mapping (writable memoryview);
- `bytes_copy(view)`: a `bytes` object. CPython allocates a big `bytes(size)` with calloc from
  pages nobody has touched yet; its data is advised, then filled before the object is handed
  to anyone, as C code does with `PyBytes_FromStringAndSize(NULL, size)`. This needs CPython's
  layout of bytes objects, which is checked once; elsewhere it is plain `bytes(view)`.

Small buffers (under HUGE_PAGE_BYTES) gain nothing and take the ordinary paths.
"""

from __future__ import annotations

import mmap
import sys

HUGE_PAGE_BYTES = 1 << 21
_MADV_HUGEPAGE = 14  # Linux's value; mmap.MADV_HUGEPAGE where Python exposes it

_libc_madvise = None
_bytes_data_offset: int | None = None
_checked = False


def private_buffer(size: int) -> memoryview:
    """`size` bytes of fresh private, writable memory (on huge pages where the system allows)."""
    if size < HUGE_PAGE_BYTES:
        return memoryview(bytearray(size))
    # Private: an anonymous shared mapping is shmem, which takes huge pages far more rarely.
    mapping = mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    advice = getattr(mmap, "MADV_HUGEPAGE", None)
    if advice is not None:
        try:
            mapping.madvise(advice)
        except OSError:
            pass
    return memoryview(mapping)


def bytes_copy(view) -> bytes:
    """`bytes(view)` for a writable, contiguous buffer, faster when it is big."""
    with memoryview(view) as flat:
        size, readonly = flat.nbytes, flat.readonly
    if size < HUGE_PAGE_BYTES or readonly or not _can_fill_bytes():
        return bytes(view)
    import ctypes

    data = bytes(size)  # calloc: zero pages not touched yet
    address = id(data) + _bytes_data_offset
    start = (address + HUGE_PAGE_BYTES - 1) & ~(HUGE_PAGE_BYTES - 1)
    end = (address + size) & ~(HUGE_PAGE_BYTES - 1)
    if end > start:
        _libc_madvise(start, end - start, _MADV_HUGEPAGE)  # advice only: its failure changes nothing
    source = (ctypes.c_char * size).from_buffer(view)
    try:
        ctypes.memmove(address, source, size)
    finally:
        del source  # releases the buffer export at once (the arena must stay resizable)
    return data


def _can_fill_bytes() -> bool:
    """CPython on Linux, with the bytes layout this module expects (checked on a small object)."""
    global _checked, _libc_madvise, _bytes_data_offset
    if _checked:
        return _bytes_data_offset is not None
    _checked = True
    if sys.implementation.name != "cpython" or not sys.platform.startswith("linux"):
        return False
    try:
        import ctypes

        madvise = ctypes.CDLL(None, use_errno=True).madvise
        madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
        madvise.restype = ctypes.c_int
        offset = bytes.__basicsize__ - 1  # where ob_sval starts in a PyBytesObject
        probe = bytes(range(64)) * 4
        # Read, never write, to check: a wrong offset must not corrupt anything.
        if sys.getsizeof(probe) != bytes.__basicsize__ + len(probe) or ctypes.string_at(id(probe) + offset, len(probe)) != probe:
            return False
    except Exception:  # no ctypes, no libc symbol: the plain copy still works
        return False
    _libc_madvise, _bytes_data_offset = madvise, offset
    return True
