"""The input a worker started by a command is running, as a number in memory it shares with its
pool: a forked worker gets such memory by inheriting it (multiprocess.RawValue); a worker started
by a command gets a memfd, passed as a descriptor and named in INDEX_FD_ENV.

Without it, such a worker writes a message before each input so that the pool knows which input
killed it; that pipe write after each call costs, right when the CPU is coldest. Linux only
(os.memfd_create); elsewhere, and for a worker in a container (which cannot get a descriptor of
the pool's), the worker reports each input's start instead.
"""

from __future__ import annotations

import ctypes
import mmap
import os

INDEX_FD_ENV = "BURLA_INDEX_FD"
_SIZE = ctypes.sizeof(ctypes.c_longlong)


class SharedIndex:
    """The pool's side: `value` is a ctypes integer whose `.value` the worker sets."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self._map = mmap.mmap(fd, _SIZE)
        self.value = ctypes.c_longlong.from_buffer(self._map)  # keeps the mapping alive
        self.value.value = -1

    @classmethod
    def create(cls) -> "SharedIndex | None":
        if not hasattr(os, "memfd_create"):
            return None
        try:
            fd = os.memfd_create("burla-input-index", os.MFD_CLOEXEC)
            os.ftruncate(fd, _SIZE)
        except OSError:
            return None
        return cls(fd)

    def after_child_started(self) -> None:
        """The child has its descriptor: ours goes (the mapping stays)."""
        try:
            os.close(self.fd)
        except OSError:
            pass


def inherited_index():
    """The worker's side: the shared integer its pool passed (INDEX_FD_ENV), or None."""
    value = os.environ.pop(INDEX_FD_ENV, "")
    if not value.isdigit():
        return None
    fd = int(value)
    try:
        shared = mmap.mmap(fd, _SIZE)
    except OSError:
        return None
    finally:
        try:
            os.close(fd)
        except OSError:
            pass
    return ctypes.c_longlong.from_buffer(shared)
