"""Scans of the installed distributions, kept on disk between processes.

Reading every distribution's metadata and file list costs about a second in an environment of
~100 packages, and every new process paid it on its first remote call. The result depends only
on what is installed: it is kept under the user's cache directory, keyed by the import path and
the modification times of its entries (installing or removing anything changes the directory's
mtime, so a stale scan is never used). A cache that cannot be read or written is simply skipped.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import tempfile
from typing import Any, Callable

import platformdirs

VERSION = 1  # of the cached data's shape


def _path_for(kind: str, signature: tuple) -> str:
    key = json.dumps([VERSION, kind, sys.version, sys.prefix, [list(entry) for entry in signature]], sort_keys=True)
    digest = hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()[:32]
    return os.path.join(platformdirs.user_cache_dir("burla"), "envscan", f"{kind}-{digest}.json")


def cached(kind: str, signature: tuple, compute: Callable[[], Any]) -> Any:
    """compute()'s JSON-serializable value for `signature`, from disk when it was made before."""
    if os.environ.get("BURLA_NO_SCAN_CACHE"):
        return compute()
    path = _path_for(kind, signature)
    try:
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    except (OSError, ValueError):
        pass
    value = compute()
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        handle, partial = tempfile.mkstemp(dir=os.path.dirname(path), prefix=".scan-")
        with os.fdopen(handle, "w", encoding="utf-8") as out:
            json.dump(value, out)
        os.replace(partial, path)
    except OSError:
        pass
    return value
