"""The gcp backend's test environment: a whole cluster on 127.0.0.1, for `pytest --pyargs
conformance_tests --burla-backend gcp` (and the backend's own tests, and bench/gcp.py).

    GCP stand-in (+ Google's Firestore emulator) ─► set_up (testcluster.py): accounts, secrets,
    config, bucket, firewall, the cluster service "deployed" on Cloud Run ─► TEST_NODES standing
    nodes booted through the service (simulated VMs running the real startup path) ─► a user
    token: BURLA_GCP_CLUSTER_URL and BURLA_GCP_TOKEN for the suite

Where BURLA_GCP_CLUSTER_URL is already set, the user's own cluster is used as configured.
Kept lean for CI's two cores: two small nodes, a boot delay of a fraction of a second, one
heartbeat a second.
"""

from __future__ import annotations

import contextlib
import os
import sys
from dataclasses import dataclass
from typing import Iterator

from burla_core.hookspecs import TestEnvironment
from burla_core.node.protocol import python_feature_version, python_version

from . import schema
from .settings import CLUSTER_URL_ENV, TOKEN_ENV

TEST_NODES = 2
TEST_MACHINE_TYPE = "n2-highmem-2"  # 2 vCPUs, 16 GB: two calls of the default func_ram=4 per node
TEST_USER = "tester@example.com"
ADMIN = "owner@example.com"


def test_config(**overrides) -> schema.ClusterConfig:
    """A cluster config for the stand-in: free ports (every VM is 127.0.0.1), fast heartbeats."""
    values = dict(machine_type=TEST_MACHINE_TYPE, node_port=0, heartbeat_s=1.0, boot_timeout_s=90.0, cpu_quota=64,
                  idle_timeout_s=3600.0, grow_idle_timeout_s=20.0, job_lease_s=10.0)
    values.update(overrides)
    return schema.ClusterConfig(**values)


def default_image() -> str:
    return f"python:{python_feature_version(python_version())}"


@dataclass
class RunningCluster:
    standin: object  # standin.StandIn
    cluster: object  # testcluster.TestCluster
    user_token: str

    @property
    def env(self) -> dict[str, str]:
        return {CLUSTER_URL_ENV: self.cluster.url, TOKEN_ENV: self.user_token}


@contextlib.contextmanager
def running_cluster(nodes: int = TEST_NODES, boot_delay_s: float = 0.2, config: schema.ClusterConfig | None = None,
                    **standin_options) -> Iterator[RunningCluster]:
    """A stand-in with a cluster set up and `nodes` standing nodes serving."""
    from .standin import StandIn
    from .testcluster import SERVICE_IMAGE, set_up

    config = config or test_config()
    run_images = {SERVICE_IMAGE: [sys.executable, "-m", "burla_backend_gcp.service"]}
    options = dict(firestore=True, boot_delay_s=boot_delay_s, run_images=run_images, stop_grace_s=1.0, preempt_grace_s=0.5)
    options.update(standin_options)
    saved = os.environ.get("FIRESTORE_EMULATOR_HOST")
    with StandIn(**options) as standin:
        os.environ["FIRESTORE_EMULATOR_HOST"] = standin.firestore_emulator.host
        try:
            cluster = set_up(standin.project_id, config=config, admin_email=ADMIN, credentials=standin.credentials(),
                             endpoint=standin.url, service_env={"BURLA_NODE_POLL_SECONDS": "0.2"})
            if nodes:
                cluster.boot(nodes, default_image())
            yield RunningCluster(standin, cluster, cluster.issue_token(TEST_USER, 7 * 24 * 3600))
        finally:
            if saved is None:
                os.environ.pop("FIRESTORE_EMULATOR_HOST", None)
            else:
                os.environ["FIRESTORE_EMULATOR_HOST"] = saved


@contextlib.contextmanager
def gcp_test_environment() -> Iterator[TestEnvironment]:
    if os.environ.get(CLUSTER_URL_ENV):
        yield TestEnvironment()  # the user's own cluster: use it as configured
        return
    with running_cluster() as running:
        yield TestEnvironment(env=running.env)
