"""The node VMs' startup script: one function writes it, shellcheck finds nothing in it, and its
values are quoted whatever they hold."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from burla_backend_gcp.vm.startup import StartupConfig, startup_script


@pytest.mark.parametrize("gpu", [False, True], ids=["cpu", "gpu"])
def test_the_startup_script_is_shellcheck_clean(tmp_path, gpu):
    shellcheck = shutil.which("shellcheck")
    if shellcheck is None:
        pytest.skip("shellcheck is not installed (Debian's package `shellcheck`; .ci/run installs it)")
    path = tmp_path / "startup-script"
    path.write_text(startup_script(StartupConfig(image="python:3.11", package="burla-open[gcp-node]==0.1.0", gpu=gpu)))
    result = subprocess.run([shellcheck, "--shell=bash", "--severity=style", str(path)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_startup_scripts_values_are_quoted(tmp_path):
    hostile = "python:3.11'; touch /tmp/pwned; echo '"
    script = startup_script(StartupConfig(image=hostile, package="burla-open==0.1.0 $(reboot)"))
    checked = subprocess.run(["bash", "-n", "-c", script], capture_output=True, text=True)
    assert checked.returncode == 0, checked.stderr
    probe = subprocess.run(["bash", "-c", script.split("\nMETADATA=", 1)[0] + '\nprintf "%s\\n" "$IMAGE" "$PACKAGE"'],
                           capture_output=True, text=True)
    assert probe.stdout.splitlines() == [hostile, "burla-open==0.1.0 $(reboot)"]
