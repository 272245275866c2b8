"""GPU names of the Burla API, and finding the NVIDIA GPUs of this machine with nvidia-smi."""

from __future__ import annotations

import shutil
import subprocess

from .errors import UnknownGPU
from .types import GpuInfo

# func_gpu name -> canonical family. "A100" and "H100" are the API's aliases.
GPU_FAMILIES = {
    "A100": "A100_40G",
    "A100_40G": "A100_40G",
    "A100_80G": "A100_80G",
    "H100": "H100_80G",
    "H100_80G": "H100_80G",
}

# canonical family -> every func_gpu name that asks for it, the alias first ("A100", "A100_40G").
# A ResourceRequest keeps only the family, so a message about it names all of them: never only
# the canonical one, which the caller may not have written.
NAMES_OF_FAMILY = {
    family: tuple(name for name, named in GPU_FAMILIES.items() if named == family) for family in GPU_FAMILIES.values()
}

# GCP machine types (API.md facts), used by cloud provisioners.
GCP_MACHINE_TYPES = {
    "A100_40G": "a2-highgpu-1g",
    "A100_80G": "a2-ultragpu-1g",
    "H100_80G": "a3-highgpu-1g",
}

# A request is also satisfied by a bigger-memory GPU of the same model.
SATISFIES = {
    "A100_40G": {"A100_40G", "A100_80G"},
    "A100_80G": {"A100_80G"},
    "H100_80G": {"H100_80G"},
}


def validate_gpu_name(func_gpu: str | None) -> str | None:
    """The canonical family of `func_gpu`, or None for no GPU; an unknown name fails at once."""
    if func_gpu is None:
        return None
    if not isinstance(func_gpu, str) or func_gpu not in GPU_FAMILIES:
        hint = ""
        if isinstance(func_gpu, str) and func_gpu.strip().upper() in GPU_FAMILIES:
            hint = f" (did you mean {func_gpu.strip().upper()!r}? names are upper case)"
        raise UnknownGPU(
            f"func_gpu={func_gpu!r} is not a GPU Burla knows{hint}; use one of: "
            f"{', '.join(map(repr, GPU_FAMILIES))}, or leave it None for no GPU"
        )
    return GPU_FAMILIES[func_gpu]


def describe_func_gpu(family: str, name: str | None = None) -> str:
    """`func_gpu=...` as the caller wrote it, for messages about a request for `family`.

    With `name` (the value the caller passed): "func_gpu='A100' (an A100_40G GPU)". Without it,
    every name that asks for `family`: "func_gpu='A100' or 'A100_40G' (an A100_40G GPU)", so
    that the caller's own spelling is always among them.
    """
    names = (name,) if name else NAMES_OF_FAMILY.get(family, (family,))
    written = " or ".join(repr(each) for each in names)
    return f"func_gpu={written}" + ("" if names == (family,) else f" (an {family} GPU)")


def family_of(name: str, memory_gb: float) -> str:
    """The func_gpu family of a GPU as nvidia-smi names it ("" when it is none of them)."""
    upper = name.upper()
    if "A100" in upper:
        return "A100_80G" if memory_gb > 60 else "A100_40G"
    if "H100" in upper:
        return "H100_80G"
    return ""


def detect_gpus(nvidia_smi: str = "nvidia-smi") -> list[GpuInfo]:
    """NVIDIA GPUs of this machine; none when nvidia-smi is absent or fails."""
    executable = shutil.which(nvidia_smi)
    if executable is None:
        return []
    try:
        output = subprocess.run(
            [executable, "--query-gpu=index,name,memory.total", "--format=csv,noheader,nounits"],
            capture_output=True,
            text=True,
            timeout=20,
            check=True,
        ).stdout
    except (subprocess.SubprocessError, OSError):
        return []
    gpus = []
    for line in output.splitlines():
        parts = [part.strip() for part in line.split(",")]
        if len(parts) < 3:
            continue
        try:
            index, memory_gb = int(parts[0]), float(parts[2]) / 1024
        except ValueError:
            continue
        gpus.append(GpuInfo(index=index, name=parts[1], family=family_of(parts[1], memory_gb), memory_gb=memory_gb))
    return gpus


def matching(gpus: list[GpuInfo], family: str) -> list[GpuInfo]:
    accepted = SATISFIES.get(family, {family})
    return [gpu for gpu in gpus if gpu.family in accepted]
