"""Simulated VMs: an inserted instance runs its startup script as a local process group, with
its own metadata server and the machine seam; deleting, preempting or cutting it off behave as
on GCE; the startup script itself passes shellcheck."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest
from google.api_core import exceptions
from google.cloud import compute_v1

from burla_backend_gcp import clients
from burla_backend_gcp.standin.processes import group_alive

from .conftest import SAMPLE_STARTUP, ZONE, free_port, http_get, vm_instance, wait_until

IMAGE = "python:3.12-slim"
# The node agent's own GPU detection, run on a simulated VM.
DETECT = "from burla_core.gpus import detect_gpus; print([(g.name, g.family) for g in detect_gpus()])"


def boot_sample(compute, standin, name: str, **kwargs):
    port = free_port()
    compute.create_and_wait(name, script=SAMPLE_STARTUP.read_text(),
                            attributes={"test-port": str(port), "test-image": IMAGE}, **kwargs)
    vm = standin.compute.wait_for_script(name)
    wait_until(lambda: http_get(f"http://127.0.0.1:{port}/") is not None, what=f"{name}'s HTTP server")
    return vm, port


@pytest.mark.skipif(shutil.which("shellcheck") is None, reason="shellcheck is not installed (apt-get install shellcheck)")
def test_the_sample_startup_script_passes_shellcheck():
    result = subprocess.run(["shellcheck", "--shell=bash", str(SAMPLE_STARTUP)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_a_vm_runs_its_startup_script_with_the_metadata_server_and_delete_kills_it(compute, standin, project):
    vm, port = boot_sample(compute, standin, "boot-vm")
    identity = json.loads((vm.directory / "identity.json").read_text())
    assert identity == {"name": "boot-vm", "zone": ZONE, "project": project}
    itself = json.loads((vm.directory / "self.json").read_text())  # the Compute API, called with the VM's token
    assert itself["name"] == "boot-vm" and itself["status"] == "RUNNING"
    seam = (vm.directory / "seam.log").read_text()
    assert "apt-get install -y -q curl ca-certificates" in seam and f"image {IMAGE}" in seam
    assert (vm.directory / "gpus.txt").read_text() == ""  # a CPU VM has no nvidia-smi, as on GCE
    callers = {r.member for r in standin.requests if r.path.endswith("/instances/boot-vm") and r.method == "GET"}
    assert f"serviceAccount:{standin.default_compute_account}" in callers
    pgid = vm.process.pid
    compute.delete("boot-vm")
    assert not group_alive(pgid), "the VM's process group outlived its deletion"
    assert http_get(f"http://127.0.0.1:{port}/", timeout_s=0.5) is None


def test_a_gpu_vm_reports_the_gpus_of_its_machine_type(compute, standin):
    vm, _ = boot_sample(compute, standin, "a100-vm", machine_type="a2-highgpu-1g", gpu=True)
    assert (vm.directory / "gpus.txt").read_text().strip() == "NVIDIA A100-SXM4-40GB, 40960"
    env = vm.environment({})
    assert env["BURLA_STANDIN_VM_GPUS"] == "nvidia-tesla-a100:1"
    found = subprocess.run([sys.executable, "-c", DETECT], env=env, cwd=vm.directory, capture_output=True, text=True,
                           timeout=60)
    assert found.stdout.strip() == "[('NVIDIA A100-SXM4-40GB', 'A100_40G')]", found.stdout + found.stderr
    assert env["BURLA_STANDIN_VM_IMAGE"] == "projects/debian-cloud/global/images/family/debian-12"


def test_guest_accelerators_and_the_image_reach_the_vm(compute, standin):
    instance_kwargs = dict(machine_type="n1-standard-8", gpu=True, script="sleep 60",
                           image="projects/deeplearning-platform-release/global/images/family/common-cu124")
    instance = vm_instance("t4-vm", **instance_kwargs)
    instance.guest_accelerators = [compute_v1.AcceleratorConfig(
        accelerator_type=f"zones/{ZONE}/acceleratorTypes/nvidia-tesla-t4", accelerator_count=2)]
    compute.wait(compute.instances.insert(project=standin.project_id, zone=ZONE, instance_resource=instance))
    vm = standin.compute.wait_for_script("t4-vm")
    env = vm.environment({})
    found = subprocess.run([sys.executable, "-c", DETECT], env=env, cwd=vm.directory, capture_output=True, text=True,
                           timeout=60)
    assert found.stdout.strip() == "[('Tesla T4', ''), ('Tesla T4', '')]", \
        f"the node agent's own GPU detection, run on the VM, saw: {found.stdout} {found.stderr}"
    assert env["BURLA_STANDIN_VM_IMAGE"].endswith("family/common-cu124")
    compute.delete("t4-vm")


def test_a_failed_boot_reaches_running_but_never_runs_the_script(compute, standin, project):
    standin.fail_boot("broken-*", "kernel panic: the image is not bootable")
    compute.create_and_wait("broken-vm", script="touch ran.txt; sleep 60")
    vm = standin.compute.find("broken-vm").vm
    wait_until(lambda: "kernel panic" in vm.serial_log.read_text(), what="the boot failure on the serial console")
    assert vm.process is None and not (vm.directory / "ran.txt").exists()
    serial = compute.instances.get_serial_port_output(project=project, zone=ZONE, instance="broken-vm")
    assert "kernel panic: the image is not bootable" in serial.contents
    assert compute.instances.get(project=project, zone=ZONE, instance="broken-vm").status == "RUNNING"


def test_the_boot_delay_holds_the_script_back(compute, standin):
    standin.config.boot_delay_s = 1.0
    try:
        compute.create_and_wait("slow-vm", script="sleep 60")
        vm = standin.compute.wait_for_script("slow-vm", timeout_s=30)
        assert vm.running_at and vm.script_started_at - vm.running_at >= 1.0, \
            "the startup script started before the boot delay had passed"
    finally:
        standin.config.boot_delay_s = 0.0


def test_a_preempted_spot_vm_hears_it_then_is_deleted(compute, standin, project, owner):
    vm, port = boot_sample(compute, standin, "spot-vm", spot=True)
    pgid = vm.process.pid
    standin.preempt("spot-vm")
    assert (vm.directory / "preempted.txt").read_text().strip() == "preempted", \
        "the script's long poll on instance/preempted did not see TRUE before the VM stopped"
    assert not group_alive(pgid)
    with pytest.raises(exceptions.NotFound):
        compute.instances.get(project=project, zone=ZONE, instance="spot-vm")  # instanceTerminationAction=DELETE
    operations = clients.zone_operations(endpoint=standin.url, credentials=owner).list(project=project, zone=ZONE)
    kinds = [(o.operation_type, o.target_link.rsplit("/", 1)[-1]) for o in operations]
    assert ("compute.instances.preempted", "spot-vm") in kinds


def test_a_preempted_standard_vm_is_terminated_not_deleted(compute, standin, project):
    compute.create_and_wait("stop-vm", script="sleep 60")
    standin.compute.wait_for_script("stop-vm")
    standin.preempt("stop-vm")
    assert compute.instances.get(project=project, zone=ZONE, instance="stop-vm").status == "TERMINATED"


def test_a_cut_network_silences_the_vm_until_restored(compute, standin):
    _, port = boot_sample(compute, standin, "cut-vm")
    standin.cut_network("cut-vm")
    assert http_get(f"http://127.0.0.1:{port}/", timeout_s=0.5) is None
    standin.restore_network("cut-vm")
    wait_until(lambda: http_get(f"http://127.0.0.1:{port}/") is not None, what="the VM answering again")
