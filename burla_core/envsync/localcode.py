"""The caller's local code: the modules a job may need that no node can install, in one archive.

    sys.modules (what the caller imported) ─┐
    the function's pickle (what it names) ──┼─► top-level names ─► local? ─► files ─► zip (cached)
    imports in those modules' source ───────┘   (outside every site-packages and the stdlib,
                                                 or from a distribution installed from a directory)

Local code is what a node cannot get from a package index: the script's neighbours, a `src/` put
on sys.path, editable installs. It travels with the job once (not per input); the node unpacks it
once per archive digest and puts it first on its workers' import path, so a function imported
from `helpers.py` next to the caller's script runs on a node whose working directory is elsewhere.
A whole top-level package travels (its data files too), a single-file module alone. burla's own
packages never travel: every node runs the same burla.
"""

from __future__ import annotations

import ast
import hashlib
import importlib.metadata
import importlib.util
import io
import json
import os
import pickletools
import site
import sys
import sysconfig
import zipfile
from dataclasses import dataclass

from ..errors import LocalCodeTooBig
from .description import name_and_version, normalize_name, path_signature
from .scancache import cached

MAX_CODE_BYTES = 100 * 1000 * 1000
MAX_CODE_FILES = 20_000
ZIP_DATE = (2020, 1, 1, 0, 0, 0)  # fixed, so that the same files always make the same archive
SKIPPED_DIRS = {"__pycache__", ".git", ".hg", ".svn", ".mypy_cache", ".pytest_cache", ".tox", ".venv", "node_modules"}
_OWN_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.realpath(__file__))))
_STRING_OPS = {"SHORT_BINUNICODE", "BINUNICODE", "BINUNICODE8", "UNICODE"}
_MEMO_OPS = {"MEMOIZE", "PUT", "BINPUT", "LONG_BINPUT"}
_GET_OPS = {"GET", "BINGET", "LONG_BINGET"}


@dataclass(frozen=True)
class CodeBundle:
    """A zip archive of local code; its names are paths relative to an import root."""

    digest: str  # sha256 of `data`
    modules: tuple[str, ...]  # the top-level module names it holds
    data: bytes


@dataclass(frozen=True)
class _Source:
    """A top-level module or package of local code: where it is and what travels of it."""

    name: str
    path: str  # the package's directory, or the module's file
    is_package: bool


def _installed_dirs() -> tuple[str, ...]:
    """Directories whose modules a node gets by other means: the stdlib, every site-packages."""
    dirs: set[str] = set()
    for prefix in {sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix}:
        paths = sysconfig.get_paths(vars={"base": prefix, "platbase": prefix, "installed_base": prefix})
        for key in ("stdlib", "platstdlib", "purelib", "platlib"):
            if paths.get(key):
                dirs.update((os.path.abspath(paths[key]), os.path.realpath(paths[key])))
    try:
        dirs.update(os.path.realpath(path) for path in site.getsitepackages())
        dirs.update(os.path.abspath(path) for path in site.getsitepackages())
    except AttributeError:  # an old virtualenv's site module
        pass
    user_site = site.getusersitepackages() if hasattr(site, "getusersitepackages") else None
    if isinstance(user_site, str):
        dirs.add(os.path.realpath(user_site))
    for entry in sys.path:
        if isinstance(entry, str) and os.path.basename(entry.rstrip(os.sep)) in ("site-packages", "dist-packages"):
            dirs.update((os.path.abspath(entry), os.path.realpath(entry)))
    return tuple(sorted(dirs))


def _inside(path: str, dirs: tuple[str, ...]) -> bool:
    return any(path == directory or path.startswith(directory + os.sep) for directory in dirs)


def _inside_either(path: str, dirs: tuple[str, ...]) -> bool:
    """The path as given or with its links resolved is inside one of `dirs`."""
    return _inside(os.path.abspath(path), dirs) or _inside(os.path.realpath(path), dirs)


def _source_of(name: str, location: str | None, search_locations, installed: tuple[str, ...],
               provided: frozenset[str]) -> _Source | None:
    """Where top-level module `name` lives, if it is local code."""
    if name in provided:
        return None  # part of an installed distribution, wherever its files are
    if location and os.path.basename(location).startswith("__init__."):
        path, is_package = os.path.dirname(location), True
    elif location:
        path, is_package = location, False
    elif search_locations:  # a namespace package: only its first portion is taken
        portions = [p for p in search_locations if isinstance(p, str) and os.path.isdir(p)]
        if not portions:
            return None
        path, is_package = portions[0], True
    else:
        return None
    if not os.path.exists(path) or _inside_either(path, installed):
        return None
    path = os.path.realpath(path)
    if os.path.dirname(path) == _OWN_ROOT and (name.startswith("burla") or name == "conformance_tests"):
        return None  # burla itself (an editable checkout): the node has the same version
    return _Source(name, path, is_package)


def _is_candidate(name: str) -> bool:
    return bool(name) and name.isidentifier() and name not in sys.stdlib_module_names and name not in ("__main__", "__mp_main__")


def _loaded_sources(installed: tuple[str, ...], provided: frozenset[str]) -> dict[str, _Source]:
    """Local top-level modules the caller has imported."""
    found: dict[str, _Source] = {}
    for name, module in list(sys.modules.items()):
        if "." in name or not _is_candidate(name) or module is None:
            continue
        location = getattr(module, "__file__", None)
        source = _source_of(name, location, getattr(module, "__path__", None), installed, provided)
        if source is not None:
            found[name] = source
    return found


def _find_source(name: str, installed: tuple[str, ...], provided: frozenset[str]) -> _Source | None:
    """A local top-level module that was not imported here (a detached job's runner), found on
    sys.path without importing it."""
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError):
        return None
    if spec is None:
        return None
    origin = spec.origin if spec.has_location else None
    return _source_of(name, origin, spec.submodule_search_locations, installed, provided)


def names_in_pickle(data: bytes) -> set[str]:
    """Top-level names of the modules a pickle refers to: the module of every global it loads
    by reference, and every module cloudpickle's `subimport` re-imports."""
    names: set[str] = set()
    stack: list = []  # the last values pushed, strings or None; enough to pair STACK_GLOBAL
    memo: dict[int, object] = {}
    subimport_next = False
    try:
        for opcode, arg, _ in pickletools.genops(data):
            op = opcode.name
            if op in _STRING_OPS:
                if subimport_next:
                    names.add(arg.split(".")[0])
                    subimport_next = False
                stack = (stack + [arg])[-2:]
            elif op in _MEMO_OPS:
                memo[len(memo) if op == "MEMOIZE" else arg] = stack[-1] if stack else None
            elif op in _GET_OPS:
                stack = (stack + [memo.get(arg)])[-2:]
            elif op == "STACK_GLOBAL":
                module, qualname = stack[-2:] if len(stack) >= 2 else (None, None)
                if isinstance(module, str):
                    names.add(module.split(".")[0])
                    subimport_next = qualname in ("subimport", "dynamic_subimport") and module.startswith("cloudpickle")
                stack = [None]
            elif op == "GLOBAL":
                names.add(arg.split(" ")[0].split(".")[0])
                stack = [None]
            elif op not in ("FRAME", "PROTO", "STOP"):
                stack = (stack + [None])[-2:]
    except Exception:  # not a pickle we can walk (a protocol newer than this Python's): no names
        return names
    return names


def _imports_in(source: _Source) -> set[str]:
    """Top-level names imported (absolutely) by the module's or package's Python files."""
    names: set[str] = set()
    for path, _ in _files_of(source):
        if not path.endswith(".py"):
            continue
        try:
            with open(path, "rb") as handle:
                tree = ast.parse(handle.read(), filename=path)
        except (OSError, SyntaxError, ValueError):
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module.split(".")[0])
    return names


@dataclass(frozen=True)
class _Distributions:
    """What the installed distributions say about top-level names."""

    provided: frozenset[str]  # names some index-installable distribution provides
    local: dict[str, _Source]  # modules of distributions installed (not editable) from a directory


_distributions: tuple[tuple, _Distributions] | None = None


def _scan_distributions() -> _Distributions:
    """Which top-level names installed distributions provide, kept until sys.path or one of its
    directories changes. A distribution installed from a local directory provides nothing a
    node could install: an editable one is found where its code lives (by the rules above), a
    plain one by its files in site-packages."""
    global _distributions
    signature = path_signature(sys.path)
    if _distributions is not None and _distributions[0] == signature:
        return _distributions[1]

    def scan() -> list:
        found = _scan_distributions_now()
        return [sorted(found.provided), {name: [s.path, s.is_package] for name, s in found.local.items()}]

    provided, local = cached("distributions", signature, scan)
    scanned = _Distributions(frozenset(provided), {name: _Source(name, path, is_package) for name, (path, is_package) in local.items()})
    _distributions = (signature, scanned)
    return scanned


def _scan_distributions_now() -> _Distributions:
    provided: set[str] = set()
    local: dict[str, _Source] = {}
    installed = _installed_dirs()
    seen: set[str] = set()
    for distribution in importlib.metadata.distributions():
        name = normalize_name(name_and_version(distribution)[0] or "")
        if not name or name in seen:
            continue  # shadowed by one earlier on the path, as imports would be
        seen.add(name)
        if not _inside_either(str(distribution.locate_file("")), installed):
            continue  # metadata in a source checkout (`setup.py develop`): found where its code is
        direct = {}
        text = distribution.read_text("direct_url.json")
        if text and '"dir_info"' in text:
            try:
                direct = json.loads(text)
            except ValueError:
                direct = {}
        from_directory = "dir_info" in direct and str(direct.get("url", "")).startswith("file:")
        editable = from_directory and bool(direct["dir_info"].get("editable"))
        if editable:
            continue
        tops: set[str] = set()
        top_level = distribution.read_text("top_level.txt")
        if top_level:
            tops.update(line.strip() for line in top_level.splitlines() if line.strip())
        for file in distribution.files or ():
            if file.parts:
                top = file.parts[0]
                tops.add(top[:-3] if top.endswith(".py") else top.split(".")[0] if top.endswith(".so") else top)
        tops = {top for top in tops if _is_candidate(top)}
        if not from_directory:
            provided.update(tops)
            continue
        for top in tops:
            location = os.path.realpath(str(distribution.locate_file(top)))
            if os.path.isdir(location):
                local[top] = _Source(top, location, True)
            elif os.path.isfile(location + ".py"):
                local[top] = _Source(top, location + ".py", False)
    return _Distributions(frozenset(provided), local)


def local_sources(function_bytes: bytes | None = None) -> list[_Source]:
    """Every local top-level module the job may need, in name order."""
    installed = _installed_dirs()
    distributions = _scan_distributions()
    from_distributions = distributions.local
    sources = _loaded_sources(installed, distributions.provided)
    pending = set(names_in_pickle(function_bytes)) if function_bytes else set()
    checked: set[str] = set()
    while pending:
        name = pending.pop()
        if name in checked or not _is_candidate(name):
            continue
        checked.add(name)
        if name in sources:
            continue  # imported here: whatever it imports is in sys.modules too
        source = from_distributions.get(name) or _find_source(name, installed, distributions.provided)
        if source is not None:
            sources[name] = source
            pending |= _imports_in(source) - checked
    for name, source in from_distributions.items():
        if name in sys.modules and name not in sources:
            sources[name] = source
    return [sources[name] for name in sorted(sources)]


def _files_of(source: _Source) -> list[tuple[str, str]]:
    """(path on disk, name in the archive) for every file of a local module or package."""
    if not source.is_package:
        return [(source.path, os.path.basename(source.path))]
    files = []
    for directory, subdirs, names in os.walk(source.path):
        subdirs[:] = sorted(d for d in subdirs if d not in SKIPPED_DIRS and not d.startswith("."))
        relative = os.path.relpath(directory, source.path)
        prefix = source.name if relative == "." else os.path.join(source.name, relative)
        for name in sorted(names):
            if name.endswith((".pyc", ".pyo")) or name.startswith("."):
                continue
            files.append((os.path.join(directory, name), os.path.join(prefix, name).replace(os.sep, "/")))
            if len(files) > MAX_CODE_FILES:
                raise LocalCodeTooBig(
                    f"local package {source.name} ({source.path}) has over {MAX_CODE_FILES} files; burla sends "
                    "local code with every job. Install it as a package on the nodes, or move what the "
                    "function does not need out of the package."
                )
    return files


_bundles: dict[tuple, CodeBundle] = {}


def bundle_local_code(function_bytes: bytes | None = None, max_bytes: int = MAX_CODE_BYTES) -> CodeBundle | None:
    """The local code a job needs, as one archive (None: there is none). The archive is made
    again only when a file changed (its size or modification time)."""
    sources = local_sources(function_bytes)
    if not sources:
        return None
    entries = []
    for source in sources:
        for path, name in _files_of(source):
            try:
                stat = os.stat(path)
            except OSError:
                continue  # removed while we looked: it cannot be needed
            entries.append((name, path, stat.st_size, stat.st_mtime_ns))
    signature = tuple(entries)
    cached = _bundles.get(signature)
    if cached is not None:
        return cached
    total = sum(size for _, _, size, _ in entries)
    if total > max_bytes:
        biggest = sorted(entries, key=lambda entry: -entry[2])[:5]
        listed = ", ".join(f"{path} ({size / 1e6:.1f} MB)" for _, path, size, _ in biggest)
        raise LocalCodeTooBig(
            f"the local code this job would send ({', '.join(s.name for s in sources)}) is "
            f"{total / 1e6:.1f} MB; the limit is {max_bytes / 1e6:.0f} MB. The biggest files: {listed}. "
            "Move large data out of your code's directories (read it inside the function instead), "
            "or install the package on the nodes."
        )
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as archive:
        for name, path, _, _ in entries:
            info = zipfile.ZipInfo(name, ZIP_DATE)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            try:
                with open(path, "rb") as handle:
                    archive.writestr(info, handle.read())
            except OSError:
                continue
    data = buffer.getvalue()
    bundle = CodeBundle(hashlib.sha256(data).hexdigest(), tuple(source.name for source in sources), data)
    if len(_bundles) > 8:
        _bundles.clear()
    _bundles[signature] = bundle
    return bundle
