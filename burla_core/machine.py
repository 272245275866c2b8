"""What this machine offers: CPUs, RAM (within its cgroup's limit) and NVIDIA GPUs. The local
backend's one node and a node agent measure themselves the same way."""

from __future__ import annotations

import functools
import os

from .gpus import detect_gpus

GIB = 2**30
RESERVED_RAM_FRACTION = 0.10  # left to the caller and the OS


def cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def total_ram_bytes() -> int:
    """Physical RAM, or the cgroup's limit when the process is confined to less."""
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") if hasattr(os, "sysconf") else 0
    for limit_file in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            text = open(limit_file).read().strip()
        except OSError:
            continue
        if text.isdigit() and 0 < int(text) < total:
            total = int(text)
    return total


def usable_ram_gb() -> float:
    return total_ram_bytes() * (1 - RESERVED_RAM_FRACTION) / GIB


@functools.lru_cache(maxsize=1)
def this_machine_gpus():
    return tuple(detect_gpus(os.environ.get("BURLA_NVIDIA_SMI", "nvidia-smi")))


def machine_report() -> dict:
    """What this machine has and runs, as an engine's worker reports it to the caller: Python's
    and Burla's versions, memory, GPUs and the image it declares (BURLA_IMAGE)."""
    import platform

    from . import __version__

    return {
        "python": platform.python_version(),
        "burla": __version__,
        "ram_bytes": total_ram_bytes(),
        "gpus": [(g.index, g.name, g.family, g.memory_gb) for g in this_machine_gpus()],
        "image": os.environ.get("BURLA_IMAGE") or None,
    }
