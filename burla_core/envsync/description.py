"""The caller's installed packages, as a node needs them to make a matching environment.

    importlib.metadata ──► every distribution on sys.path ──► Requirement(name, version, url)
                                                              (the first of a name wins, as import sees it)

A distribution installed from a local directory (editable or not) is not a requirement: a node
cannot reach the caller's disk, so its modules travel with the job as local code instead
(burla_core.envsync.localcode). burla itself is never a requirement either: the node runs the same
burla version, which every call checks before it sends anything.

Describing an environment reads every distribution's metadata (milliseconds for a few hundred);
the result is kept until sys.path or one of its directories changes (an install touches its
site-packages directory), so a second call pays nothing.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
import platform
import re
import sys
import threading
from dataclasses import dataclass, field

from .scancache import cached

OWN_DISTRIBUTION = "burla-open"


def normalize_name(name: str) -> str:
    """PEP 503's normalized project name: `Foo_Bar.baz` and `foo-bar-baz` are one project."""
    return re.sub(r"[-_.]+", "-", name).lower()


@dataclass(frozen=True)
class Requirement:
    """One installed distribution: `name==version`, or `name @ url` for a direct-URL/VCS install."""

    name: str  # as the distribution's metadata spells it
    version: str
    url: str | None = None

    @property
    def key(self) -> str:
        return normalize_name(self.name)

    def spec(self) -> str:
        """The line an installer takes (pip and uv read the same requirement syntax)."""
        if self.url:
            return f"{self.name} @ {self.url}"
        return f"{self.name}=={self.version}"


@dataclass(frozen=True)
class PackageIndex:
    """Where a node looks for packages besides its own configuration (backend_options)."""

    index_url: str | None = None
    extra_index_urls: tuple[str, ...] = ()
    find_links: tuple[str, ...] = ()

    def is_empty(self) -> bool:
        return not (self.index_url or self.extra_index_urls or self.find_links)


@dataclass(frozen=True)
class EnvironmentDescription:
    python: str  # the caller's full Python version, e.g. "3.11.7"
    requirements: tuple[Requirement, ...]
    index: PackageIndex = field(default_factory=PackageIndex)
    # Distributions installed from the caller's own directories: not installable elsewhere.
    local_distributions: tuple[str, ...] = ()

    def digest(self) -> str:
        lines = [self.python] + sorted(requirement.spec() for requirement in self.requirements)
        return hashlib.sha256("\n".join(lines).encode()).hexdigest()


def name_and_version(distribution: importlib.metadata.Distribution) -> tuple[str | None, str | None]:
    """The distribution's Name and Version, read from the head of its METADATA: a tenth of the
    time of `distribution.metadata`, which parses the whole file (long description and all) as
    an email — a fresh machine's first scan of its packages took 150 ms that way."""
    text = distribution.read_text("METADATA") or distribution.read_text("PKG-INFO") or ""
    found: dict[str, str] = {}
    for line in text.splitlines():
        if not line:
            break  # the headers end at the first empty line
        key, colon, value = line.partition(":")
        key = key.lower()
        if colon and key in ("name", "version") and key not in found:
            found[key] = value.strip()
    if "name" not in found or "version" not in found:  # not the usual layout: let the parser judge
        return distribution.metadata["Name"], distribution.metadata["Version"]
    return found["name"], found["version"]


def requirement_of(distribution: importlib.metadata.Distribution, name: str, version: str | None) -> Requirement | None:
    """The distribution (its `name_and_version`) as a requirement, or None when it was installed
    from a local directory. PEP 610's direct_url.json says where a direct-URL install came from."""
    text = distribution.read_text("direct_url.json")
    if not text:
        return Requirement(name, version)
    try:
        direct = json.loads(text)
        url = direct["url"]
    except (ValueError, KeyError, TypeError):
        return Requirement(name, version)
    if "dir_info" in direct and url.startswith("file:"):
        return None  # `pip install -e .` or `pip install ./dir`: the code travels as local code
    if "vcs_info" in direct:
        vcs = direct["vcs_info"]
        commit = vcs.get("commit_id") or vcs.get("requested_revision")
        url = f"{vcs.get('vcs', 'git')}+{url}" + (f"@{commit}" if commit else "")
        subdirectory = direct.get("subdirectory")
        if subdirectory:
            url += f"#subdirectory={subdirectory}"
        return Requirement(name, version, url)
    if url.startswith("file:"):
        return Requirement(name, version)  # a wheel on the caller's disk: the node's index may have it
    return Requirement(name, version, url)


def path_signature(paths: list[str]) -> tuple:
    """Changes when an entry of `paths` is added, removed, or has something installed into it."""
    signature = []
    for entry in paths:
        try:
            signature.append((entry, os.stat(entry or ".").st_mtime_ns))
        except OSError:
            signature.append((entry, None))
    return tuple(signature)


_described: tuple[tuple, tuple[tuple[Requirement, ...], tuple[str, ...]]] | None = None
_describing = threading.Lock()  # one scan at a time: a second caller waits for the first's result


def installed_requirements(paths: list[str] | None = None) -> tuple[tuple[Requirement, ...], tuple[str, ...]]:
    """(requirements, local distribution names) of the distributions on `paths` (sys.path)."""
    global _described
    paths = list(sys.path if paths is None else paths)
    signature = path_signature(paths)
    if _described is not None and _described[0] == signature:
        return _described[1]

    def scan() -> list:
        requirements, local = _scan_requirements(paths)
        return [[[r.name, r.version, r.url] for r in requirements], list(local)]

    with _describing:
        if _described is not None and _described[0] == signature:
            return _described[1]
        scanned = cached("requirements", signature, scan)
        result = (tuple(Requirement(*entry) for entry in scanned[0]), tuple(scanned[1]))
        _described = (signature, result)
    return result


def _scan_requirements(paths: list[str]) -> tuple[tuple[Requirement, ...], tuple[str, ...]]:
    requirements: dict[str, Requirement] = {}
    local: list[str] = []
    seen: set[str] = set()
    for distribution in importlib.metadata.distributions(path=paths):
        name, version = name_and_version(distribution)
        if not name:
            continue  # a broken dist-info directory: nothing an installer could use
        key = normalize_name(name)
        if key in seen:
            continue  # shadowed by one earlier on the path, as imports would be
        seen.add(key)
        if key == OWN_DISTRIBUTION:
            continue
        requirement = requirement_of(distribution, name, version)
        if requirement is None:
            local.append(name)
        else:
            requirements[key] = requirement
    return tuple(sorted(requirements.values(), key=lambda r: r.key)), tuple(sorted(local))


def python_version() -> str:
    return platform.python_version()


def describe_environment(index: PackageIndex | None = None) -> EnvironmentDescription:
    requirements, local = installed_requirements()
    return EnvironmentDescription(python_version(), requirements, index or PackageIndex(), local)
