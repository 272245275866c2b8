"""What the stand-in does for the processes around it: nothing it starts outlives it, a local
process finds its credentials through a metadata server as on GCE, and the loopback guard holds
in child processes too."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading

import pytest

from burla_backend_gcp import netguard
from burla_backend_gcp.standin.processes import group_alive

from ..conftest import python_env
from .conftest import wait_until


def test_a_killed_standin_takes_its_vms_with_it():
    child = subprocess.Popen([sys.executable, "-m", "tests.gcp.standin_child"], env=python_env(),
                             stdout=subprocess.PIPE, text=True, cwd=os.path.dirname(os.path.dirname(os.path.dirname(__file__))))
    watchdog = threading.Timer(120, child.kill)  # a child that hangs before printing ends the read
    watchdog.start()
    try:
        line = child.stdout.readline()
        assert line.strip().isdigit(), f"the child stand-in did not boot its VM (it printed {line!r})"
        vm_group = int(line)
        assert group_alive(vm_group)
        child.send_signal(signal.SIGKILL)  # no cleanup runs in the stand-in itself
        child.wait(timeout=10)
        wait_until(lambda: not group_alive(vm_group), timeout_s=15, what="the reaper to kill the orphaned VM")
    finally:
        watchdog.cancel()
        child.kill()
        child.wait(timeout=10)


def test_google_auth_default_finds_the_workstation_identity(standin, project):
    script = textwrap.dedent(f"""
        import json
        import google.auth
        from burla_backend_gcp import clients
        credentials, found_project = google.auth.default()
        crm = clients.resource_manager()
        held = crm.test_iam_permissions(resource="projects/{project}",
                                        permissions=["compute.instances.create", "compute.instances.list"]).permissions
        print(json.dumps({{"kind": type(credentials).__module__, "project": found_project, "held": list(held)}}))
    """)
    member = "user:looker@example.com"
    standin.iam.grant(f"projects/{project}", "roles/compute.viewer", member)
    env = standin.environment(member)
    env["PYTHONPATH"] = python_env()["PYTHONPATH"]
    result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    seen = json.loads(result.stdout.strip().splitlines()[-1])
    assert seen == {"kind": "google.auth.compute_engine.credentials", "project": project,
                    "held": ["compute.instances.list"]}


def test_the_netguard_refuses_other_hosts_here():
    assert netguard.installed(), "tests/conftest.py did not install the loopback guard"
    # A name under .invalid (RFC 6761) can never resolve: were the guard broken, nothing is reached.
    with pytest.raises(netguard.NonLoopbackConnection, match="compute.example.invalid"):
        socket.getaddrinfo("compute.example.invalid", 443)
    with pytest.raises(netguard.NonLoopbackConnection, match="192.0.2.1"):
        socket.create_connection(("192.0.2.1", 80), timeout=1)
    with pytest.raises(netguard.NonLoopbackConnection, match="169.254.169.254"):
        socket.socket().connect_ex(("169.254.169.254", 80))
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        for host in ("127.0.0.1", "localhost"):
            socket.create_connection((host, server.getsockname()[1]), timeout=5).close()


def test_the_netguard_reaches_a_child_through_the_client_factory():
    script = textwrap.dedent("""
        from google.auth.credentials import AnonymousCredentials
        from burla_backend_gcp import clients
        try:
            clients.resource_manager(credentials=AnonymousCredentials()).get_project(name="projects/x", timeout=5)
        except Exception as exc:
            print(type(exc).__name__, exc)
    """)
    # The factory points the client at a host other than this machine (one that can never
    # resolve, so that a broken guard would reach nothing either): the child's guard refuses it.
    env = python_env(BURLA_NETGUARD="1", BURLA_GCP_STANDIN="http://standin.example.invalid:8080")
    result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120)
    assert "burla netguard: name lookup of 'standin.example.invalid' refused" in result.stdout, \
        result.stdout + result.stderr
