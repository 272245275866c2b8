"""The worker's side of local code: put a job's unpacked archive first on the import path.

A warm worker runs one job after another; when the next job brings other local code (or none),
the modules the last one imported from its archive are forgotten, so that `import helpers`
finds the new job's `helpers.py`, never the old one's.
"""

from __future__ import annotations

import importlib
import sys

CODE_PATH_KEY = "BURLA_CODE_PATH"  # in a job's worker env: the unpacked archive's directory
CODE_MODULES_KEY = "BURLA_CODE_MODULES"  # and the top-level names it holds, comma-separated

_active: tuple[str | None, frozenset[str]] = (None, frozenset())


def use_local_code(path: str | None, modules: str | None) -> None:
    global _active
    names = frozenset(name for name in (modules or "").split(",") if name)
    if (path, names) == _active:
        return
    old_path, old_names = _active
    if old_path is not None and old_path in sys.path:
        sys.path.remove(old_path)
    forget = old_names | names
    for name in [name for name in sys.modules if name.split(".")[0] in forget]:
        del sys.modules[name]
    if path is not None:
        sys.path.insert(0, path)
    importlib.invalidate_caches()
    _active = (path, names)
