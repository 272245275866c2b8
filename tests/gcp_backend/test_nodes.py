"""Nodes on the gcp backend: only nodes of the call's image, Python and GPU are used; grow=True
boots what is missing (from no node of the kind at all), with the call's image, region and disk,
GPU machine types with their GPUs; a booting node's progress reaches the job, it joins the moment
it serves, and a grown node deletes its own VM once idle."""

from __future__ import annotations

import os
import subprocess
import time

import pytest

import burla
from burla import remote_parallel_map
from burla_backend_gcp import clients, schema
from burla_backend_gcp.provisioner import GcpProvisioner
from burla_core.types import GROWTH_ENDED, NODE_JOINED, NODE_STATUS, EventSink, JobSpec, Membership, ResourceRequest

from .conftest import nodes, vm_names, wait_until


def where_am_i(x):
    """What the machine running this call is (the stand-in tells a simulated VM its name)."""
    return os.environ.get("BURLA_STANDIN_VM_NAME"), os.environ.get("BURLA_STANDIN_VM_ZONE"), x


def gpus_here(x):
    names = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, check=True).stdout.strip().splitlines()
    return os.environ.get("BURLA_STANDIN_VM_NAME"), names


def test_a_call_for_an_image_no_node_runs_lists_the_clusters_images_and_suggests_grow(use_gcp):
    with pytest.raises(burla.NoCompatibleNodes) as caught:
        remote_parallel_map(where_am_i, [1], image="registry.example/other:1", backend="gcp", spinner=False)
    message = str(caught.value)
    assert "'python:3.11'" in message and "registry.example/other:1" in message and "grow=True" in message
    ran = remote_parallel_map(where_am_i, [1, 2], image="python:3.11", backend="gcp", spinner=False)
    assert {name for name, _, _ in ran} <= set(nodes(use_gcp))


def test_grow_boots_nodes_with_the_calls_image_region_and_disk_from_none_of_its_kind(use_gcp):
    gcp = use_gcp
    image = "registry.example/grown:1"  # no node of the cluster runs it: growth starts from zero
    started = time.monotonic()
    ran = remote_parallel_map(where_am_i, list(range(6)), image=image, grow=True, region="europe-west4", disk_gb=80,
                              backend="gcp", spinner=False)
    assert [x for _, _, x in ran] == list(range(6))
    grown = {name for name, _, _ in ran}
    documents = nodes(gcp)
    assert grown and all(documents[name]["image"] == image for name in grown), documents
    assert {zone for _, zone, _ in ran} == {"europe-west4-a"}
    assert len(grown) == 1, "six calls of 1 CPU and 4 GB fit in one VM of the family; it should boot one"
    instances = clients.instances(endpoint=gcp.standin.url, credentials=gcp.standin.credentials())
    (name,) = grown
    vm = instances.get(project=gcp.standin.project_id, zone="europe-west4-a", instance=name)
    assert vm.disks[0].disk_size_gb == 80 and vm.machine_type.endswith("/n2-highmem-8")
    assert schema.NODE_TAG in vm.tags.items and vm.service_accounts[0].email.startswith(schema.NODE_SERVICE_ACCOUNT_ID)
    attributes = {item.key: item.value for item in vm.metadata.items}
    assert attributes["burla-cluster-url"] == gcp.cluster.url, "the node tells the service it is ready, there"
    seam_log = next((gcp.standin.root / "vms").glob(f"{name}-*")) / "seam.log"
    assert f"image {image}" in seam_log.read_text(), "the agent should run inside the call's image"
    print(f"grow from zero of its kind: {time.monotonic() - started:.1f} s")


def test_gpu_calls_boot_a2_and_a3_machines_whose_gpus_the_workers_see(use_gcp):
    gcp = use_gcp
    a100 = remote_parallel_map(gpus_here, [0, 1], func_gpu="A100", grow=True, backend="gcp", spinner=False)
    h100 = remote_parallel_map(gpus_here, [0], func_gpu="H100", grow=True, backend="gcp", spinner=False)
    documents = nodes(gcp)
    assert {documents[name]["machine_type"] for name, _ in a100} == {"a2-highgpu-2g"}  # 2 GPU calls: one VM, 2 GPUs
    assert all(len(names) == 2 and all("A100-SXM4-40GB" in n for n in names) for _, names in a100), a100
    assert {documents[name]["machine_type"] for name, _ in h100} == {"a3-highgpu-1g"}
    assert "H100 80GB" in h100[0][1][0]
    instances = clients.instances(endpoint=gcp.standin.url, credentials=gcp.standin.credentials())
    vm = instances.get(project=gcp.standin.project_id, zone="us-central1-a", instance=h100[0][0])
    assert vm.scheduling.on_host_maintenance == "TERMINATE"
    assert documents[h100[0][0]]["boot_image"] == schema.DEFAULT_GPU_BOOT_IMAGE
    with pytest.raises(burla.NoCompatibleNodes, match="A100_80G"):
        remote_parallel_map(gpus_here, [0], func_gpu="A100_80G", backend="gcp", spinner=False)


def test_a_booting_nodes_progress_reaches_the_job_and_it_joins_once_it_serves(use_gcp):
    events = EventSink()
    provisioner = GcpProvisioner({})
    request = ResourceRequest(image="registry.example/watched:1", grow=True)
    assert provisioner.eligible_nodes(request) == []
    membership = Membership(events, wanted_slots=2, growing=True)
    job = JobSpec("watch-test", b"", "f", request, grow=True)
    provisioner.watch_job(job, [], membership)
    seen: list[list] = []
    deadline = time.monotonic() + 90
    while not any(event[0] == GROWTH_ENDED for event in seen) and time.monotonic() < deadline:
        event = events.get(0.5)
        if event is not None:
            seen.append(event)
    membership.close()
    provisioner.release_idle()
    kinds = [event[0] for event in seen]
    statuses = [event[2] for event in seen if event[0] == NODE_STATUS and event[2]]
    assert NODE_JOINED in kinds and GROWTH_ENDED in kinds, seen
    assert kinds.index(NODE_JOINED) < kinds.index(GROWTH_ENDED)
    assert statuses and any("starting the node agent" in text or "booting" in text for text in statuses), statuses
    joined = next(event[2] for event in seen if event[0] == NODE_JOINED)
    assert joined.slots >= 1 and joined.address.startswith("https://") and joined.access.ca_pem.startswith("-----BEGIN")
    assert next(event[2] for event in seen if event[0] == GROWTH_ENDED) == []


def test_grown_nodes_delete_their_own_vm_once_idle(use_gcp):
    gcp = use_gcp
    ran = remote_parallel_map(where_am_i, [1], image="registry.example/short-lived:1", grow=True, backend="gcp",
                              spinner=False)
    name = ran[0][0]
    document = wait_until(lambda: nodes(gcp)[name] if nodes(gcp)[name]["status"] == schema.DELETED else None, 60,
                          f"{name} to delete itself")
    assert "idle for 4 s" in document["status_reason"]
    wait_until(lambda: name not in vm_names(gcp), 30, f"{name}'s VM to go")
    assert len([n for n in nodes(gcp).values() if n["status"] in schema.SERVING_STATUSES and not n.get("grown_for")]) >= 2
