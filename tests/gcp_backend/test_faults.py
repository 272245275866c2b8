"""Faults on a gcp cluster while jobs run, each checking that every result arrives exactly once:
a VM deleted mid-job, a preempted VM, a boot refused for quota, a caller killed mid-job; and the
nodes that cannot serve (an agent that cannot start, a VM that never boots, a startup script
that fails) say why in their node document and delete their VM."""

from __future__ import annotations

import collections
import json
import ssl
import threading
import time
import urllib.request

import pytest

import burla
from burla import remote_parallel_map
from burla_backend_gcp import clients, schema
from burla_backend_gcp.standin.firestore import find_emulator
from burla_backend_gcp.vm.startup import StartupConfig, startup_script
from conformance_tests._support import ScriptRun

from .conftest import ZONE, cluster_database, nodes, set_config, vm_names, wait_until

INPUTS = 60


def slow_identity(x):
    import time

    time.sleep(0.1)
    return x


def assert_exactly_once(counts: collections.Counter, expected: list) -> None:
    twice = {value: count for value, count in counts.items() if count > 1}
    missing = set(expected) - set(counts)
    assert not twice, f"results delivered more than once: {twice}"
    assert not missing, f"results never delivered: {sorted(missing)[:20]} ({len(missing)} in all)"
    assert sum(counts.values()) == len(expected)


def run_with_fault(fault, image: str, after_results: int = 10, **options) -> collections.Counter:
    """Run the job as a generator (a duplicate would show), doing `fault()` in a thread once
    `after_results` results arrived."""
    counts: collections.Counter = collections.Counter()
    faults: list[threading.Thread] = []
    for value in remote_parallel_map(slow_identity, list(range(INPUTS)), image=image, generator=True, spinner=False,
                                     backend="gcp", backend_options={"loss_seconds": "3"}, **options):
        counts[value] += 1
        if sum(counts.values()) == after_results:
            faults.append(threading.Thread(target=fault, daemon=True))
            faults[0].start()
    for thread in faults:
        thread.join(30)
    return counts


FAULT_IMAGES = ("faults/deleted:1", "faults/preempted:1")


@pytest.fixture(scope="module")
def fault_nodes(gcp):
    """Two nodes per fault test, booted all at once (each pair runs its own image, so only its
    test's jobs use it); ready_nodes(image) waits for a pair to serve."""
    booting = {image: [item["node_id"] for item in gcp.cluster.api("POST", "/v1/nodes", {"count": 2, "image": image})["booting"]]
               for image in FAULT_IMAGES}

    def ready_nodes(image: str) -> list[str]:
        ids = booting[image]
        gcp.cluster.wait_for(lambda found: all(found.get(i, {}).get("status") in schema.SERVING_STATUSES for i in ids),
                             120, f"nodes {ids} to serve")
        return ids

    yield ready_nodes
    for ids in booting.values():
        for node_id in ids:
            try:
                gcp.cluster.api("DELETE", f"/v1/nodes/{node_id}")
            except Exception:
                pass


def instances(gcp):
    return clients.instances(endpoint=gcp.standin.url, credentials=gcp.standin.credentials())


def test_a_vm_deleted_mid_job_loses_no_input_and_repeats_none(use_gcp, fault_nodes, capsys):
    gcp, image = use_gcp, "faults/deleted:1"
    doomed, survivor = fault_nodes(image)

    def delete_vm():
        clients.wait_zone_operation(instances(gcp).delete(project=gcp.standin.project_id, zone=ZONE, instance=doomed),
                                    project=gcp.standin.project_id, zone=ZONE, endpoint=gcp.standin.url,
                                    credentials=gcp.standin.credentials(), timeout_s=60)

    assert_exactly_once(run_with_fault(delete_vm, image), list(range(INPUTS)))
    assert "was lost" in capsys.readouterr().err
    document = wait_until(lambda: nodes(gcp)[doomed] if nodes(gcp)[doomed]["status"] == schema.DELETED else None, 20,
                          "the deleted node's document to say so")
    assert "the VM shut down" in document["status_reason"]
    assert nodes(gcp)[survivor]["status"] in schema.SERVING_STATUSES


def test_a_preempted_vm_loses_no_input_and_repeats_none(use_gcp, fault_nodes, capsys):
    gcp, image = use_gcp, "faults/preempted:1"
    preempted, _ = fault_nodes(image)
    assert_exactly_once(run_with_fault(lambda: gcp.standin.preempt(preempted), image), list(range(INPUTS)))
    assert "was lost" in capsys.readouterr().err
    document = wait_until(lambda: nodes(gcp)[preempted] if nodes(gcp)[preempted]["status"] == schema.DELETED else None,
                          30, "the preempted node's document")
    assert "preempted" in document["status_reason"]


def used_cpus(gcp, region: str = "us-central1") -> int:
    """The vCPUs of the VMs that count against the region's quota now."""
    return sum(int(n.get("cpus") or 0) for n in nodes(gcp).values()
               if n["status"] in schema.LIVE_STATUSES and (n.get("zone") or "").startswith(region))


def test_a_boot_refused_for_quota_says_why_and_the_job_goes_on_with_the_nodes_it_has(use_gcp, capsys):
    gcp = use_gcp
    gcp.standin.set_cpu_quota("us-central1", used_cpus(gcp) + 1)
    try:
        with pytest.raises(burla.NodesFailedToBoot) as caught:
            remote_parallel_map(slow_identity, [1, 2], image="faults/quota:1", grow=True, backend="gcp", spinner=False)
        assert "QUOTA_EXCEEDED" in str(caught.value) and "Quota 'CPUS' exceeded" in str(caught.value)
        # With nodes serving, the job runs on them, and the failed boot is a notice.
        counts = collections.Counter(remote_parallel_map(slow_identity, list(range(40)), grow=True, generator=True,
                                                         backend="gcp", spinner=False))
        assert_exactly_once(counts, list(range(40)))
        err = capsys.readouterr().err
        assert "failed to boot" in err and "QUOTA_EXCEEDED" in err, err
    finally:
        gcp.standin.set_cpu_quota("us-central1", None)


KEEP_BEATING = """
import os, sys, time
import burla

def beat(path):
    import time
    while True:
        with open(path, "a") as handle:
            handle.write(".")
        time.sleep(0.05)

print("started", flush=True)
burla.remote_parallel_map(beat, [os.path.join(sys.argv[1], f"beat-{i}") for i in range(3)], backend="gcp", spinner=False)
"""


def health(gcp, address: str) -> dict:
    context = ssl.create_default_context(cadata=gcp.cluster.ca_pem)
    request = urllib.request.Request(address + "/v1/health", headers={"Authorization": f"Bearer {gcp.cluster.node_token}"})
    with urllib.request.urlopen(request, timeout=10, context=context) as answer:
        return json.loads(answer.read())


def test_a_killed_callers_job_stops_on_the_nodes_within_the_lease(use_gcp, tmp_path):
    gcp = use_gcp
    script = tmp_path / "caller.py"
    script.write_text(KEEP_BEATING)
    work = tmp_path / "beats"
    work.mkdir()
    caller = ScriptRun(str(script), str(work), extra_env=gcp.env)
    try:
        wait_until(lambda: len(list(work.glob("beat-*"))) == 3, 60, "the calls to start beating")
    except AssertionError:
        caller.kill()
        raise AssertionError(caller.report()) from None
    caller.kill()  # SIGKILL: no goodbye to the nodes
    lease = gcp.cluster.config.job_lease_s

    def sizes():
        return {path.name: path.stat().st_size for path in work.glob("beat-*")}

    def stopped():
        before = sizes()
        time.sleep(0.5)
        return before == sizes()

    wait_until(stopped, lease + 15, f"the calls to stop within the nodes' {lease:.0f} s lease")
    serving = [n for n in nodes(gcp).values() if n["status"] in schema.SERVING_STATUSES and n["image"] == "python:3.11"]
    wait_until(lambda: all(health(gcp, n["address"])["jobs"] == 0 for n in serving), 15, "the nodes to forget the job")


def test_an_agent_that_cannot_start_reports_why_and_deletes_its_vm(use_gcp):
    gcp = use_gcp
    old = set_config(gcp, job_lease_s=0.5)  # `burla node start --job-lease 0.5` is refused: at least 1 s
    try:
        answer = gcp.cluster.api("POST", "/v1/nodes", {"count": 1, "image": "faults/broken:1"})
        (node_id,) = [item["node_id"] for item in answer["booting"]]
        document = wait_until(lambda: nodes(gcp)[node_id] if nodes(gcp)[node_id]["status"] == schema.FAILED else None,
                              60, "the node to fail")
    finally:
        set_config(gcp, job_lease_s=old.job_lease_s)
    assert "the node agent could not start" in document["status_reason"] and "--job-lease" in document["status_reason"]
    wait_until(lambda: node_id not in vm_names(gcp), 30, "its VM to be deleted")
    logs = [s.to_dict()["text"] for s in cluster_database(gcp).collection(schema.NODES).document(node_id)
            .collection(schema.NODE_LOGS).stream()]
    assert any("could not start" in text for text in logs), logs


def test_a_vm_that_never_boots_is_failed_with_its_serial_console_and_deleted(use_gcp):
    gcp = use_gcp
    old = set_config(gcp, boot_timeout_s=3.0)
    gcp.standin.fail_boot("burla-node-*", "kernel panic - not syncing")
    try:
        answer = gcp.cluster.api("POST", "/v1/nodes", {"count": 1, "image": "faults/never:1"})
        (node_id,) = [item["node_id"] for item in answer["booting"]]
        document = wait_until(lambda: nodes(gcp)[node_id] if nodes(gcp)[node_id]["status"] == schema.FAILED else None,
                              60, "the service to give up on the VM")
    finally:
        gcp.standin.compute.faults.boot_failures.clear()
        set_config(gcp, boot_timeout_s=old.boot_timeout_s)
    assert "did not become ready within 3 s" in document["status_reason"]
    assert "kernel panic" in document["status_reason"]
    wait_until(lambda: node_id not in vm_names(gcp), 30, "its VM to be deleted")


def test_a_failing_startup_script_writes_why_into_the_node_document_and_deletes_its_vm(use_gcp):
    """Before the node supervisor runs, the script itself reports (over Firestore's REST API,
    which the gcloud emulator serves and the npm one does not)."""
    if find_emulator().kind != "jar":
        pytest.skip("the npm Firestore emulator has no REST API")
    from google.cloud import compute_v1

    gcp = use_gcp
    name = "burla-node-script-fails"
    script = startup_script(StartupConfig(image="python:3.11", package="burla-open", gpu=True))  # no GPU on n2
    account = f"{schema.NODE_SERVICE_ACCOUNT_ID}@{gcp.standin.project_id}.iam.gserviceaccount.com"
    instance = compute_v1.Instance(
        name=name, machine_type=f"zones/{ZONE}/machineTypes/n2-standard-2",
        disks=[compute_v1.AttachedDisk(boot=True, auto_delete=True, initialize_params=compute_v1.AttachedDiskInitializeParams(
            source_image=schema.DEFAULT_BOOT_IMAGE))],
        metadata=compute_v1.Metadata(items=[compute_v1.Items(key="startup-script", value=script)]),
        service_accounts=[compute_v1.ServiceAccount(email=account)])
    instances(gcp).insert(project=gcp.standin.project_id, zone=ZONE, instance_resource=instance)
    reference = cluster_database(gcp).collection(schema.NODES).document(name)
    document = wait_until(lambda: (reference.get().to_dict() or {}).get("status") == schema.FAILED and reference.get().to_dict(),
                          60, "the script's report")
    assert "no NVIDIA driver" in document["status_reason"]
    wait_until(lambda: name not in vm_names(gcp), 30, "the VM to delete itself")
