"""The node's environments: one per package set a job needs, built once, shared, cached on disk.

    job's EnvironmentDescription ──plan()──► what differs from the agent's own environment
         │  nothing differs: the agent's workers as they are (no environment at all)
         ▼
    acquire(plan) ──► ROOT/envs/KEY/site   (KEY: hash of the Python and the pins to install)
         ├─ ready?            use it                      ┐ a lease holds a shared lock on
         └─ else, under an exclusive build lock:          │ locks/env-KEY.use while a job (or a
              install into envs/KEY.partial, then rename  ┘ warm worker pool) uses the entry
    acquire_code(bundle) ──► ROOT/code/DIGEST/site   (the job's local code, unpacked once)

An environment holds only what differs from the agent's (`--target` installs, no dependency
resolution), and the job's workers put it first on their import path, so the job's versions win
and what is already present at the same version is never installed again. Locks are fcntl locks
on files under ROOT/locks: two jobs (or two agents, or an agent restarted mid-install) that need
the same entry install it once, and a partial install left by a dead agent is redone. When the
entries are over the disk cap, the least recently used ones go, never one a lease holds.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import platform
import shutil
import sys
import threading
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

try:
    import fcntl
except ImportError:  # Windows: no agent there, but importing must not fail
    fcntl = None  # type: ignore[assignment]

from ..envsync.description import EnvironmentDescription, PackageIndex, Requirement
from ..envsync.localcode import CodeBundle
from ..envsync.description import installed_requirements
from .installer import DEFAULT_INSTALL_SECONDS, InstallError, find_installer, install

LOCK_POLL_SECONDS = 0.05
META = "meta.json"
DEFAULT_CACHE_BYTES = 20 * 1000**3


class EnvironmentBuildFailed(Exception):
    """Making an environment failed; `requirement` names the package (None: not about one),
    `output` holds the installer's last lines."""

    def __init__(self, message: str, requirement: Requirement | None = None, output: str = "") -> None:
        super().__init__(message)
        self.requirement = requirement
        self.output = output


@dataclass(frozen=True)
class InstallPlan:
    """What a job needs installed beyond the agent's environment."""

    key: str
    requirements: tuple[Requirement, ...]
    index: PackageIndex


class Lease:
    """A job's use of a cache entry: a shared lock that keeps eviction away, until released."""

    def __init__(self, cache: "EnvironmentCache", kind: str, key: str, path: Path, handle) -> None:
        self.cache = cache
        self.kind = kind
        self.key = key
        self.path = path  # the directory to put on the import path
        self._handle = handle

    def release(self) -> None:
        if self._handle is None:
            return
        self.cache._touch(self.path.parent)
        handle, self._handle = self._handle, None
        handle.close()  # closing drops the lock


def _locked(handle, mode: int, deadline: float, what: str) -> None:
    """flock with a deadline (a plain blocking flock could wait forever)."""
    while True:
        try:
            fcntl.flock(handle.fileno(), mode | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            if time.monotonic() > deadline:
                raise EnvironmentBuildFailed(f"timed out waiting for {what}") from None
            time.sleep(LOCK_POLL_SECONDS)


def _size_of(directory: Path) -> int:
    total = 0
    for parent, _, names in os.walk(directory):
        for name in names:
            try:
                total += os.lstat(os.path.join(parent, name)).st_size
            except OSError:
                pass
    return total


def _python_tag() -> str:
    return f"{sys.implementation.name}{sys.version_info[0]}.{sys.version_info[1]}-{sys.platform}-{platform.machine()}"


class EnvironmentCache:
    def __init__(
        self,
        root: str | os.PathLike,
        max_bytes: int = DEFAULT_CACHE_BYTES,
        installer: str = "auto",
        install_seconds: float = DEFAULT_INSTALL_SECONDS,
        python: str = sys.executable,
    ) -> None:
        if fcntl is None:
            raise EnvironmentBuildFailed("environment sync needs fcntl locks (Linux or macOS)")
        self.root = Path(root)
        self.max_bytes = max_bytes
        self.installer_preference = installer
        self.install_seconds = install_seconds
        self.python = python
        for part in ("envs", "code", "locks"):
            (self.root / part).mkdir(parents=True, exist_ok=True)
        self.builds = 0  # installs this process made (health and tests read it)
        self.reuses = 0
        self._counter_lock = threading.Lock()

    # --- what a job needs --------------------------------------------------------------------

    def plan(self, description: EnvironmentDescription) -> InstallPlan | None:
        """The packages the job needs that the agent lacks at the same version (None: none)."""
        own = {requirement.key: requirement for requirement in installed_requirements()[0]}
        missing = []
        for requirement in description.requirements:
            present = own.get(requirement.key)
            if present is not None and present.version == requirement.version and (
                requirement.url is None or requirement.url == present.url
            ):
                continue
            missing.append(requirement)
        if not missing:
            return None
        text = "\n".join([_python_tag()] + sorted(requirement.spec() for requirement in missing))
        return InstallPlan(hashlib.sha256(text.encode()).hexdigest()[:32], tuple(missing), description.index)

    # --- entries -----------------------------------------------------------------------------

    def acquire(self, plan: InstallPlan, on_install: Callable[[InstallPlan], None] | None = None) -> Lease:
        """The environment for `plan`, installed if no one has yet; blocks (call it off the
        event loop). `on_install` is called when this call is the one that installs."""

        def build(partial: Path) -> None:
            installer = find_installer(self.installer_preference, self.python)
            if installer is None:
                raise EnvironmentBuildFailed(
                    "no installer on this node: install uv (`pip install uv`) or pip in the agent's environment"
                    + (f" (the agent was told to use {self.installer_preference})" if self.installer_preference != "auto" else ""),
                )
            if on_install is not None:
                on_install(plan)
            try:
                install(installer, list(plan.requirements), str(partial / "site"), plan.index, self.install_seconds, self.python)
            except InstallError as error:
                raise EnvironmentBuildFailed(str(error), error.requirement, error.output) from None

        return self._acquire("envs", plan.key, build, {"requirements": [r.spec() for r in plan.requirements]})

    def acquire_code(self, bundle: CodeBundle) -> Lease:
        """The job's local code, unpacked (once per archive digest)."""

        def build(partial: Path) -> None:
            site = partial / "site"
            site.mkdir(parents=True)
            try:
                with zipfile.ZipFile(io.BytesIO(bundle.data)) as archive:
                    for info in archive.infolist():
                        name = info.filename
                        if name.startswith("/") or ".." in Path(name).parts or "\\" in name:
                            raise EnvironmentBuildFailed(f"the job's local code holds a file outside its directory: {name!r}")
                        archive.extract(info, site)
            except zipfile.BadZipFile as error:
                raise EnvironmentBuildFailed(f"the job's local code is not a zip archive: {error}") from None

        if hashlib.sha256(bundle.data).hexdigest() != bundle.digest:
            raise EnvironmentBuildFailed("the job's local code does not match its digest")
        return self._acquire("code", bundle.digest, build, {"modules": list(bundle.modules)})

    def _acquire(self, kind: str, key: str, build: Callable[[Path], None], details: dict) -> Lease:
        deadline = time.monotonic() + self.install_seconds + 60
        final = self.root / kind / key
        use = open(self.root / "locks" / f"{kind}-{key}.use", "a+b")
        try:
            _locked(use, fcntl.LOCK_SH, deadline, f"the {kind} entry {key} (being evicted)")
            if not (final / META).exists():
                with open(self.root / "locks" / f"{kind}-{key}.build", "a+b") as build_lock:
                    _locked(build_lock, fcntl.LOCK_EX, deadline, f"another install of {kind} entry {key}")
                    if not (final / META).exists():  # whoever held the lock may have built it
                        self._build(kind, key, final, build, details)
                        with self._counter_lock:
                            self.builds += int(kind == "envs")
                        self.evict()
                        return Lease(self, kind, key, final / "site", use)
            with self._counter_lock:
                self.reuses += int(kind == "envs")
            self._touch(final)
            return Lease(self, kind, key, final / "site", use)
        except BaseException:
            use.close()
            raise

    def _build(self, kind: str, key: str, final: Path, build: Callable[[Path], None], details: dict) -> None:
        partial = final.with_name(key + ".partial")
        shutil.rmtree(partial, ignore_errors=True)  # left by an agent that died mid-install
        shutil.rmtree(final, ignore_errors=True)  # an entry without its meta file is unfinished
        partial.mkdir(parents=True)
        started = time.monotonic()
        try:
            build(partial)
            meta = dict(details, key=key, kind=kind, size=_size_of(partial), seconds=round(time.monotonic() - started, 3), created=time.time())
            (partial / META).write_text(json.dumps(meta))
            os.rename(partial, final)
        except BaseException:
            shutil.rmtree(partial, ignore_errors=True)
            raise

    @staticmethod
    def _touch(entry: Path) -> None:
        try:
            os.utime(entry / META)  # its modification time is its last use
        except OSError:
            pass

    # --- the disk cap ------------------------------------------------------------------------

    def entries(self) -> list[dict]:
        """Every finished entry: kind, key, size, last use (oldest first)."""
        found = []
        for kind in ("envs", "code"):
            for meta_path in (self.root / kind).glob(f"*/{META}"):
                if "." in meta_path.parent.name:
                    continue  # a .partial or .evicting directory, not an entry
                try:
                    meta = json.loads(meta_path.read_text())
                    last_used = meta_path.stat().st_mtime
                except (OSError, ValueError):
                    continue
                found.append({"kind": kind, "key": meta_path.parent.name, "size": int(meta.get("size", 0)), "last_used": last_used})
        return sorted(found, key=lambda entry: entry["last_used"])

    def evict(self) -> list[str]:
        """Remove least recently used entries until the cache fits its cap; entries in use stay.
        Returns the keys removed."""
        removed = []
        with open(self.root / "locks" / "cache.lock", "a+b") as cache_lock:
            _locked(cache_lock, fcntl.LOCK_EX, time.monotonic() + 60, "the cache lock")
            for kind in ("envs", "code"):
                for leftover in (self.root / kind).glob("*.evicting"):  # an eviction cut short
                    shutil.rmtree(leftover, ignore_errors=True)
            entries = self.entries()
            total = sum(entry["size"] for entry in entries)
            for entry in entries:
                if total <= self.max_bytes:
                    break
                with open(self.root / "locks" / f"{entry['kind']}-{entry['key']}.use", "a+b") as use:
                    try:
                        fcntl.flock(use.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                    except BlockingIOError:
                        continue  # a job uses it
                    directory = self.root / entry["kind"] / entry["key"]
                    doomed = directory.with_name(entry["key"] + ".evicting")
                    try:
                        os.rename(directory, doomed)
                    except OSError:
                        continue
                    shutil.rmtree(doomed, ignore_errors=True)
                    total -= entry["size"]
                    removed.append(entry["key"])
        return removed

    def summary(self) -> dict:
        entries = self.entries()
        return {
            "root": str(self.root),
            "environments": sum(1 for entry in entries if entry["kind"] == "envs"),
            "code_archives": sum(1 for entry in entries if entry["kind"] == "code"),
            "bytes": sum(entry["size"] for entry in entries),
            "max_bytes": self.max_bytes,
            "installs": self.builds,
            "reuses": self.reuses,
        }
