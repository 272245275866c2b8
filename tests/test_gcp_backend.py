"""Backend "gcp" as a user meets it: registered like any plugin, imported only when used, and the
whole conformance suite passing on a cluster its test environment brings up on 127.0.0.1 (the GCP
stand-in, Google's Firestore emulator, the cluster service, two simulated nodes)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def test_importing_burla_and_running_locally_loads_nothing_of_the_gcp_backend_but_its_plugin_record():
    script = (
        "import sys, burla\n"
        "assert burla.remote_parallel_map(abs, [-1], spinner=False) == [1]\n"
        "loaded = sorted(m for m in sys.modules if m.startswith(('google', 'burla_backend_gcp', 'grpc')))\n"
        "assert loaded == ['burla_backend_gcp', 'burla_backend_gcp.plugin'], loaded  # the plugin's records only\n"
        "from burla_core import plugins\n"
        "assert 'gcp' in plugins.installed_backends()\n"
        "assert not [m for m in sys.modules if m.startswith('google')]\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, cwd=REPO)
    assert result.returncode == 0, result.stderr


def test_a_caller_needs_no_google_library_to_run_on_a_cluster():
    """The provisioner and transport of the caller speak HTTP to the service and the nodes."""
    script = (
        "import sys, os\n"
        "os.environ['BURLA_GCP_CLUSTER_URL'] = 'http://127.0.0.1:9'\n"
        "os.environ['BURLA_GCP_TOKEN'] = 'burla_x'\n"
        "from burla_backend_gcp.provisioner import GcpProvisioner\n"
        "from burla_backend_gcp.transport import GcpTransport\n"
        "GcpProvisioner({}); GcpTransport({})\n"
        "assert not [m for m in sys.modules if m.startswith(('google', 'grpc'))]\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, cwd=REPO)
    assert result.returncode == 0, result.stderr


def test_the_conformance_suite_brings_up_its_own_cluster_and_passes():
    """`pytest --pyargs conformance_tests --burla-backend gcp` needs no setup: the backend's test
    environment starts the stand-in, the emulator, the cluster service and two nodes."""
    pytest.importorskip("google.cloud.compute_v1", reason="the gcp extra is not installed")
    from burla_backend_gcp.standin.firestore import EmulatorNotFound, find_emulator

    try:
        find_emulator()
    except EmulatorNotFound as missing:
        pytest.skip(f"no Firestore emulator: {missing}")
    env = dict(os.environ)
    for name in ("BURLA_BACKEND", "BURLA_GCP_CLUSTER_URL", "BURLA_GCP_TOKEN", "BURLA_GCP_STANDIN"):
        env.pop(name, None)
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "-x", "--pyargs", "conformance_tests",
         "--burla-backend", "gcp", "--timeout", "120"],
        capture_output=True, text=True, env=env, timeout=900, cwd=REPO,
    )
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-3000:]
    print(f"the conformance suite on gcp took {time.monotonic() - started:.0f} s")
