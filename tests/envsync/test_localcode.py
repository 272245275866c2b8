"""The caller's local code: found, archived once, capped."""

from __future__ import annotations

import io
import subprocess
import sys
import textwrap
import zipfile

import pytest

from burla_core.envsync.localcode import bundle_local_code, local_sources
from burla_core.errors import LocalCodeTooBig


def names_in(bundle) -> set[str]:
    return set(zipfile.ZipFile(io.BytesIO(bundle.data)).namelist())


@pytest.fixture
def project(tmp_path, monkeypatch):
    """A script's directory with a neighbour module and a package with a data file, imported."""
    (tmp_path / "bsync_helpers.py").write_text("def double(x):\n    return 2 * x\n")
    package = tmp_path / "bsync_pkg"
    (package / "__pycache__").mkdir(parents=True)
    (package / "__init__.py").write_text("from .core import triple\n")
    (package / "core.py").write_text("def triple(x):\n    return 3 * x\n")
    (package / "table.csv").write_text("a,b\n1,2\n")
    (package / "__pycache__" / "core.cpython-311.pyc").write_bytes(b"junk")
    monkeypatch.syspath_prepend(str(tmp_path))
    import bsync_helpers  # noqa: F401
    import bsync_pkg  # noqa: F401

    yield tmp_path
    for name in [n for n in sys.modules if n.split(".")[0] in ("bsync_helpers", "bsync_pkg")]:
        del sys.modules[name]


def test_imported_local_modules_travel_with_their_data_files(project):
    bundle = bundle_local_code()
    assert {"bsync_helpers", "bsync_pkg"} <= set(bundle.modules)
    names = names_in(bundle)
    assert {"bsync_helpers.py", "bsync_pkg/__init__.py", "bsync_pkg/core.py", "bsync_pkg/table.csv"} <= names
    assert not any("__pycache__" in name for name in names)
    assert not any(name.split("/")[0] in ("burla_core", "burla", "json", "cloudpickle") for name in names), names


def test_the_archive_is_made_again_only_when_a_file_changes(project):
    first = bundle_local_code()
    assert bundle_local_code() is first
    (project / "bsync_helpers.py").write_text("def double(x):\n    return x + x\n")
    assert bundle_local_code().digest != first.digest


def test_local_code_over_the_cap_fails_naming_the_biggest_file(project):
    (project / "bsync_pkg" / "weights.bin").write_bytes(b"\0" * 300_000)
    with pytest.raises(LocalCodeTooBig) as raised:
        bundle_local_code(max_bytes=200_000)
    assert "weights.bin" in str(raised.value) and "0.3 MB" in str(raised.value)


def test_modules_a_pickled_function_names_are_found_without_importing_them(tmp_path, monkeypatch):
    (tmp_path / "bsync_unloaded.py").write_text("import bsync_unloaded_dep\n\ndef f(x):\n    return bsync_unloaded_dep.g(x)\n")
    (tmp_path / "bsync_unloaded_dep.py").write_text("def g(x):\n    return x\n")
    pickled = subprocess.run(
        [sys.executable, "-c", textwrap.dedent("""
            import sys, cloudpickle, bsync_unloaded
            sys.stdout.buffer.write(cloudpickle.dumps(bsync_unloaded.f))
        """)],
        cwd=tmp_path, capture_output=True, check=True, timeout=60,
    ).stdout
    monkeypatch.syspath_prepend(str(tmp_path))
    assert "bsync_unloaded" not in sys.modules
    found = {source.name for source in local_sources(pickled)}
    assert {"bsync_unloaded", "bsync_unloaded_dep"} <= found
    assert "bsync_unloaded" not in sys.modules, "finding local code imported it"
