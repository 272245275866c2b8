"""The cluster service's code, as install ships it: a zip of this installation's own packages.

Cloud Run runs a stock Python image (no image of ours to build or host); bootstrap.py, its
command, fetches this archive from the cluster's bucket, installs the requirements the image
lacks and runs the service from the archive. The archive is deterministic (sorted entries, fixed
times), so the same code gives the same SHA-256 and a second install finds nothing to upload;
its object name carries the version and the digest, so an update is a new object and a new
revision, and a revision always runs exactly the code it was deployed with.

It holds the packages with their data files and the distribution's metadata (so entry points,
and with them the built-in plugins, load from the zip as they do from site-packages).
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import io
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path

from burla_core import __version__

from .names import CODE_PREFIX

DISTRIBUTION = "burla-open"
PACKAGES = ("burla", "burla_core", "burla_backend_local", "burla_backend_nodes", "burla_backend_gcp", "burla_cli")
SERVICE_EXTRAS = ("gcp",)
_FIXED_TIME = (1980, 1, 1, 0, 0, 0)
_SKIPPED_SUFFIXES = (".pyc", ".pyo")


@dataclass(frozen=True)
class CodeArchive:
    data: bytes
    sha256: str
    version: str

    @property
    def object_name(self) -> str:
        return f"{CODE_PREFIX}{DISTRIBUTION}-{self.version}-{self.sha256[:16]}.zip"


def _package_files(package: str) -> list[tuple[str, Path]]:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(f"the package {package} of {DISTRIBUTION} cannot be found: reinstall burla")
    root = Path(list(spec.submodule_search_locations)[0])
    found = []
    for path in sorted(root.rglob("*")):
        relative = path.relative_to(root)
        if (not path.is_file() or "__pycache__" in relative.parts or path.suffix in _SKIPPED_SUFFIXES
                or any(part.startswith(".") for part in relative.parts)):
            continue
        found.append((f"{package}/{relative.as_posix()}", path))
    return found


def _metadata_files() -> list[tuple[str, bytes]]:
    """METADATA and entry_points.txt of the installed distribution, as a .dist-info."""
    distribution = importlib.metadata.distribution(DISTRIBUTION)
    folder = f"{DISTRIBUTION.replace('-', '_')}-{__version__}.dist-info"
    files = []
    for name in ("METADATA", "entry_points.txt"):
        text = distribution.read_text(name) or distribution.read_text("PKG-INFO" if name == "METADATA" else name)
        if text:
            files.append((f"{folder}/{name}", text.encode("utf-8")))
    return files


def build_archive() -> CodeArchive:
    buffer = io.BytesIO()
    entries: list[tuple[str, bytes]] = []
    for package in PACKAGES:
        entries += [(name, path.read_bytes()) for name, path in _package_files(package)]
    entries += _metadata_files()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, data in sorted(entries):
            info = zipfile.ZipInfo(name, date_time=_FIXED_TIME)
            info.external_attr = 0o644 << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, data)
    data = buffer.getvalue()
    return CodeArchive(data=data, sha256=hashlib.sha256(data).hexdigest(), version=__version__)


def service_requirements() -> list[str]:
    """What the service needs installed: the distribution's own requirements and its gcp extra."""
    wanted = []
    for requirement in importlib.metadata.requires(DISTRIBUTION) or []:
        spec, _, marker = requirement.partition(";")
        marker = marker.strip()
        extra = re.fullmatch(r'extra\s*==\s*["\']([^"\']+)["\']', marker)
        if not marker or (extra and extra.group(1) in SERVICE_EXTRAS):
            if not spec.strip().startswith(DISTRIBUTION):
                wanted.append(spec.strip())
    return wanted
