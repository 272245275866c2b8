"""Fixtures of the gcp backend's tests: one cluster for the whole package, on the GCP stand-in
and Google's Firestore emulator (burla_backend_gcp.testenv), two standing nodes; helpers to
reach its service, its nodes and its VMs."""

from __future__ import annotations

import time

import pytest

pytest.importorskip("google.cloud.compute_v1", reason="the gcp extra is not installed (pip install -e '.[test]')")

from burla_backend_gcp import clients, schema  # noqa: E402
from burla_backend_gcp.standin.firestore import EmulatorNotFound, find_emulator  # noqa: E402
from burla_backend_gcp.testenv import running_cluster, test_config  # noqa: E402

ZONE = "us-central1-a"


@pytest.fixture(scope="package")
def gcp():
    """The package's cluster (RunningCluster: .standin, .cluster, .user_token, .env)."""
    try:
        find_emulator()
    except EmulatorNotFound as missing:
        pytest.skip(f"no Firestore emulator: {missing}")
    with running_cluster(nodes=2, config=test_config(grow_idle_timeout_s=4.0)) as running:
        yield running


@pytest.fixture
def use_gcp(gcp, monkeypatch):
    """This test's calls run on the session's cluster as its test user."""
    for key, value in gcp.env.items():
        monkeypatch.setenv(key, value)
    return gcp


def nodes(gcp) -> dict[str, dict]:
    return {node["node_id"]: node for node in gcp.cluster.nodes()}


def wait_until(predicate, timeout_s: float, what: str):
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}")
        time.sleep(0.1)


def vm_names(gcp) -> set[str]:
    instances = clients.instances(endpoint=gcp.standin.url, credentials=gcp.standin.credentials())
    return {instance.name for instance in instances.list(project=gcp.standin.project_id, zone=ZONE)}


def cluster_database(gcp):
    """The cluster's Firestore database, as the project's owner."""
    return clients.firestore(gcp.standin.project_id, schema.DATABASE, endpoint=gcp.standin.url,
                             credentials=gcp.standin.credentials())


def set_config(gcp, **values) -> schema.ClusterConfig:
    """Change the cluster's config document (as the dashboard would); returns the old one."""
    database = cluster_database(gcp)
    reference = database.collection(schema.CONFIG_COLLECTION).document(schema.CONFIG_DOCUMENT)
    old = schema.ClusterConfig.from_document(reference.get().to_dict())
    reference.update(values)
    time.sleep(1.1)  # the service caches the config for a second
    return old
