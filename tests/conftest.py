"""Isolates every test from the user's own burla files (data dir and config go to tmp dirs) and
from every host but this one."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

TESTS_DIR = Path(__file__).parent


@pytest.fixture(autouse=True, scope="session")
def loopback_only():
    """No test reaches anything but this machine: lookups and connections to any other host fail
    (burla_backend_gcp.netguard), in this process and, through BURLA_NETGUARD=1, in the processes
    the GCP stand-in and the client factory start. NO_GCE_CHECK keeps google.auth from probing
    169.254.169.254 (it must be lowercase "true")."""
    from burla_backend_gcp import netguard

    os.environ["NO_GCE_CHECK"] = "true"
    netguard.install()
    yield
    netguard.uninstall()


@pytest.fixture(autouse=True)
def isolated_burla_files(tmp_path_factory, monkeypatch):
    home = tmp_path_factory.mktemp("burla-home")
    monkeypatch.setenv("BURLA_DATA_DIR", str(home / "data"))
    monkeypatch.setenv("BURLA_CONFIG", str(home / "config.json"))
    monkeypatch.delenv("BURLA_BACKEND", raising=False)
    yield home


@pytest.fixture
def fake_gpus(monkeypatch):
    """Make the local backend see the GPUs named by the test (through a stand-in nvidia-smi)."""
    from burla_backend_local import provisioner

    def install(spec: str) -> None:
        monkeypatch.setenv("FAKE_GPUS", spec)
        monkeypatch.setenv("BURLA_NVIDIA_SMI", str(TESTS_DIR / "fake_nvidia_smi.py"))
        provisioner.this_machine_gpus.cache_clear()

    yield install
    provisioner.this_machine_gpus.cache_clear()


def python_env(**extra: str) -> dict:
    """The environment for a child Python that must import this checkout."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(TESTS_DIR.parent)] + sys.path)
    env.update(extra)
    return env
