"""Session fixtures for environment sync: the wheels, the index, the farm and the bare venvs are
made once per test session (they are the slow part); each test gets its own cache directory."""

from __future__ import annotations

import pytest

from .packaging_helpers import IndexServer, bare_venv, dependency_farm, install_into, probe_wheel

PROBE = "bsync-alpha"  # a package only the caller has, in two versions
OTHER = "bsync-beta"


@pytest.fixture(scope="package")
def wheel_dir(tmp_path_factory):
    directory = tmp_path_factory.mktemp("wheels")
    for version in ("1.0", "2.0"):
        probe_wheel(directory, PROBE, version)
        probe_wheel(directory, OTHER, version)
    return directory


@pytest.fixture(scope="package")
def package_index(wheel_dir):
    server = IndexServer(wheel_dir)
    yield server
    server.close()


@pytest.fixture(scope="package")
def farm(tmp_path_factory):
    return dependency_farm(tmp_path_factory.mktemp("farm"))


@pytest.fixture(scope="package")
def uv_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("uv-cache")


@pytest.fixture(scope="package")
def agent_python(tmp_path_factory, farm, package_index, uv_cache):
    """A bare venv for node agents: burla and its dependencies, and bsync-beta 1.0 (a package
    of the agent's own, which a caller may pin at another version)."""
    python = bare_venv(tmp_path_factory.mktemp("agent") / "venv", farm)
    install_into(python, [f"{OTHER}==1.0"], package_index.url, uv_cache)
    return python


@pytest.fixture(scope="package")
def caller_venvs(tmp_path_factory, farm, package_index, uv_cache):
    """Two callers' venvs: the agent's packages plus bsync-alpha 1.0; or bsync-alpha 2.0 and
    bsync-beta 2.0 (the agent has 1.0)."""
    made = {}
    for version, extra in (("1.0", []), ("2.0", [f"{OTHER}==2.0"])):
        python = bare_venv(tmp_path_factory.mktemp(f"caller-{version}") / "venv", farm)
        install_into(python, [f"{PROBE}=={version}", *extra], package_index.url, uv_cache)
        made[version] = python
    return made
