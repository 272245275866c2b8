"""The hardware catalogue of the stand-in: regions and zones, machine types, GPUs.

Machine types follow GCE's naming and sizes (vCPUs, memory, the GPUs a2/a3/g2 types carry);
every type is offered in every zone. Accelerator types are the ones `guestAccelerators` may
name on N1. The GPU names and memory are what `nvidia-smi` prints on such a machine, so the
node agent's own detection (burla_core.gpus) sees the GPU a VM was created with.
"""

from __future__ import annotations

from dataclasses import dataclass

ZONES: dict[str, tuple[str, ...]] = {
    "us-central1": ("a", "b", "c", "f"),
    "us-east1": ("b", "c", "d"),
    "us-east4": ("a", "b", "c"),
    "us-west1": ("a", "b", "c"),
    "europe-west1": ("b", "c", "d"),
    "europe-west4": ("a", "b", "c"),
    "asia-southeast1": ("a", "b", "c"),
}


def region_of(zone: str) -> str:
    return zone.rsplit("-", 1)[0]


def known_zone(zone: str) -> bool:
    region, _, letter = zone.rpartition("-")
    return letter in ZONES.get(region, ())


@dataclass(frozen=True)
class Gpu:
    """A GPU as nvidia-smi names it, and its memory in MiB."""

    smi_name: str
    memory_mib: int


ACCELERATORS: dict[str, Gpu] = {
    "nvidia-tesla-t4": Gpu("Tesla T4", 15360),
    "nvidia-tesla-v100": Gpu("Tesla V100-SXM2-16GB", 16384),
    "nvidia-tesla-p100": Gpu("Tesla P100-PCIE-16GB", 16384),
    "nvidia-l4": Gpu("NVIDIA L4", 23034),
    "nvidia-tesla-a100": Gpu("NVIDIA A100-SXM4-40GB", 40960),
    "nvidia-a100-80gb": Gpu("NVIDIA A100-SXM4-80GB", 81920),
    "nvidia-h100-80gb": Gpu("NVIDIA H100 80GB HBM3", 81559),
}


@dataclass(frozen=True)
class MachineType:
    name: str
    cpus: int
    memory_mb: int
    accelerator: str = ""  # the accelerator type the machine type carries (a2, a3, g2)
    gpus: int = 0

    @property
    def family(self) -> str:
        return self.name.split("-", 1)[0]


def _catalogue() -> dict[str, MachineType]:
    types: list[MachineType] = [MachineType("e2-micro", 2, 1024), MachineType("e2-small", 2, 2048),
                                MachineType("e2-medium", 2, 4096)]
    shapes = {"standard": 4096, "highmem": 8192, "highcpu": 1024}
    for family, sizes in {
        "e2": (2, 4, 8, 16, 32), "n2": (2, 4, 8, 16, 32, 48, 64, 80, 96, 128),
        "n4": (2, 4, 8, 16, 32, 48, 64, 80), "n2d": (2, 4, 8, 16, 32, 48, 64, 96, 128, 224),
        "c3": (4, 8, 22, 44, 88, 176),
    }.items():
        for shape, per_cpu in shapes.items():
            types += [MachineType(f"{family}-{shape}-{cpus}", cpus, cpus * per_cpu) for cpus in sizes]
    for cpus in (1, 2, 4, 8, 16, 32, 64, 96):
        types += [MachineType(f"n1-standard-{cpus}", cpus, cpus * 3840),
                  MachineType(f"n1-highmem-{cpus}", cpus, cpus * 6656)]
    for gpus, cpus in ((1, 12), (2, 24), (4, 48), (8, 96)):
        types.append(MachineType(f"a2-highgpu-{gpus}g", cpus, cpus * 87040 // 12, "nvidia-tesla-a100", gpus))
        types.append(MachineType(f"a2-ultragpu-{gpus}g", cpus, cpus * 174080 // 12, "nvidia-a100-80gb", gpus))
    types.append(MachineType("a2-megagpu-16g", 96, 1392640, "nvidia-tesla-a100", 16))
    for gpus, cpus in ((1, 26), (2, 52), (4, 104), (8, 208)):
        types.append(MachineType(f"a3-highgpu-{gpus}g", cpus, cpus * 9216, "nvidia-h100-80gb", gpus))
    for cpus, gpus in ((4, 1), (8, 1), (12, 1), (16, 1), (24, 2), (32, 1), (48, 4), (96, 8)):
        types.append(MachineType(f"g2-standard-{cpus}", cpus, cpus * 4096, "nvidia-l4", gpus))
    return {t.name: t for t in types}


MACHINE_TYPES: dict[str, MachineType] = _catalogue()
