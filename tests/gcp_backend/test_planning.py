"""What grow=True boots: the fewest VMs of the machine family that give the missing slots,
within the cluster's CPU cap; and which nodes fit a call."""

from __future__ import annotations

from burla_backend_gcp import schema
from burla_backend_gcp.fit import Call, slots_for, why_none_fit
from burla_backend_gcp.service.grow import pack
from burla_backend_gcp.service.instances import MachineShape
from burla_core.types import ResourceRequest

N2 = [MachineShape(f"n2-standard-{cpus}", cpus, cpus * 4.0, 0) for cpus in (2, 4, 8, 16, 32)]
A2 = [MachineShape(f"a2-highgpu-{gpus}g", 12 * gpus, 85.0 * gpus, gpus) for gpus in (1, 2, 4, 8)]


def call(**resources) -> Call:
    return Call(ResourceRequest(**resources), "3.11.7", "0.1.0")


def test_the_missing_slots_go_into_the_fewest_vms():
    planned, shortfall = pack(N2, call(), wanted_slots=20, cpu_budget=1000)
    assert shortfall is None
    assert [p.machine.name for p in planned] == ["n2-standard-32"]  # 32 CPUs, 115 GB: 28 slots of 4 GB
    planned, _ = pack(N2, call(func_cpu=4, func_ram=8), wanted_slots=20, cpu_budget=1000)
    assert sum(p.slots for p in planned) >= 20 and len(planned) == 3  # 8 slots per n2-standard-32


def test_the_cpu_cap_stops_growth_and_says_why():
    planned, shortfall = pack(N2, call(), wanted_slots=100, cpu_budget=40)
    assert sum(p.machine.cpus for p in planned) <= 40
    assert planned and "CPU cap" in shortfall and "cpu_quota" in shortfall
    planned, shortfall = pack(N2, call(), wanted_slots=4, cpu_budget=1)
    assert planned == [] and "leaves 1 vCPUs" in shortfall


def test_gpu_calls_get_one_gpu_each_from_the_families_machines():
    planned, _ = pack(A2, call(func_gpu="A100_40G"), wanted_slots=3, cpu_budget=1000)
    assert [p.machine.name for p in planned] == ["a2-highgpu-4g"] and planned[0].slots == 4
    planned, _ = pack(A2, call(func_gpu="A100_40G"), wanted_slots=1, cpu_budget=1000)
    assert [p.machine.name for p in planned] == ["a2-highgpu-1g"]


def test_a_call_no_machine_of_the_family_fits_is_refused_with_the_family():
    planned, shortfall = pack(N2, call(func_ram=500), wanted_slots=1, cpu_budget=1000)
    assert planned == [] and "n2-standard-32" in shortfall and "func_ram=500" in shortfall


def node(**values) -> dict:
    base = {"node_id": "n1", "status": schema.READY, "cpus": 4, "ram_gb": 14.4, "gpus": [], "image": "python:3.11",
            "python": "3.11.2", "burla": "0.1.0", "machine_type": "n2-standard-4"}
    base.update(values)
    return base


def test_only_serving_nodes_of_the_callers_image_and_versions_fit():
    assert slots_for(node(), call()) == 3
    assert slots_for(node(status=schema.BOOTING), call()) == 0
    assert slots_for(node(), call(image="python:3.12")) == 0
    assert slots_for(node(python="3.12.1"), call()) == 0
    assert slots_for(node(burla="0.0.9"), call()) == 0
    a100 = {"index": 0, "name": "NVIDIA A100-SXM4-40GB", "family": "A100_40G", "memory_gb": 40}
    assert slots_for(node(gpus=[a100]), call(func_gpu="A100_40G")) == 1
    assert slots_for(node(), call(func_gpu="A100_40G")) == 0


def test_no_compatible_nodes_names_the_images_the_cluster_has_and_suggests_grow():
    message = why_none_fit(call(image="my/image:2"), [node(), node(node_id="n2", image="python:3.12")])
    assert "'python:3.11', 'python:3.12'" in message and "grow=True" in message and "my/image:2" in message
