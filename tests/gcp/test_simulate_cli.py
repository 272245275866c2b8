"""`burla gcp simulate`: the stand-in in the foreground, printing what to export; what it prints
is enough for another process to use it; Ctrl-C stops it and what it started. Also: importing
burla, the CLI or the client factory loads no Google library (the import costs a second)."""

from __future__ import annotations

import shlex
import signal
import subprocess
import sys
import textwrap
import threading

from ..conftest import python_env


def test_simulate_prints_a_working_environment_and_stops_on_ctrl_c():
    simulate = subprocess.Popen([sys.executable, "-m", "burla_cli", "gcp", "simulate", "--no-firestore",
                                 "--project", "sim-project"], env=python_env(), stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
    watchdog = threading.Timer(120, simulate.kill)  # a hung simulate ends the read loop below
    watchdog.start()
    try:
        exports: dict[str, str] = {}
        for line in simulate.stdout:
            if line.startswith("unset "):
                break
            if line.startswith("export "):
                key, _, value = line[len("export "):].strip().partition("=")
                exports[key] = shlex.split(value)[0]
        assert "BURLA_GCP_STANDIN" in exports, f"simulate printed no environment: {simulate.stderr.read()}"
        assert exports["BURLA_GCP_STANDIN"].startswith("http://127.0.0.1:"), exports
        assert exports["GOOGLE_CLOUD_PROJECT"] == exports["CLOUDSDK_CORE_PROJECT"] == "sim-project"
        script = textwrap.dedent("""
            from burla_backend_gcp import clients
            print(clients.resource_manager().get_project(name="projects/sim-project").project_id)
        """)
        env = python_env(**exports)
        env.pop("NO_GCE_CHECK", None)
        used = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120)
        assert used.stdout.strip() == "sim-project", used.stderr
    finally:
        simulate.send_signal(signal.SIGINT)
        try:
            status = simulate.wait(timeout=30)
        finally:
            simulate.kill()
            watchdog.cancel()
    assert status == 0, simulate.stderr.read()


def test_importing_burla_the_cli_and_the_factory_loads_no_google_library():
    script = "import burla, burla_cli.main, burla_backend_gcp.clients, sys; print([m for m in sys.modules if m.startswith('google')])"
    result = subprocess.run([sys.executable, "-c", script], env=python_env(), capture_output=True, text=True, timeout=60)
    assert result.stdout.strip() == "[]", result.stdout + result.stderr


def test_simulate_refuses_unusable_options_as_usage_errors():
    from click.testing import CliRunner

    from burla_cli.main import cli

    for args, option in ((["--port", "99999"], "--port"), (["--boot-delay", "nan"], "--boot-delay"),
                         (["--boot-delay", "-1"], "--boot-delay"), (["--run-image", "no-equals-sign"], "--run-image")):
        result = CliRunner().invoke(cli, ["gcp", "simulate", "--no-firestore", *args])
        assert result.exit_code == 2 and option in result.output, (args, result.output)
