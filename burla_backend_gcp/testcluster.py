"""A cluster set up in a project the way `burla install` sets one up, through the same client
factory: for the backend's tests, its test environment and its benchmark (the GCP stand-in),
not a replacement for the installer (no permission checks, no idempotent re-runs).

    service accounts burla-cluster, burla-node ─► their roles (schema.SERVICE_ROLES, NODE_ROLES)
    secrets: node token, cluster CA (cert, key), cluster token ─► who may read each
    Firestore: the config document;  Cloud Storage: the bucket;  the node firewall rule
    Cloud Run: the cluster service ─► its URL;  an administrator's user token for the tests

`TestCluster.boot(n)` then boots standing nodes through the service and waits until they serve.
"""

from __future__ import annotations

import json
import secrets
import time
import urllib.request
from dataclasses import dataclass, field

from . import clients, schema
from .tls import make_ca

SERVICE_IMAGE = "burla-cluster-service:local"  # the stand-in plays it with `python -m burla_backend_gcp.service`


@dataclass
class TestCluster:
    __test__ = False  # not a pytest test class

    project: str
    region: str
    url: str  # the cluster service's
    admin_email: str
    admin_token: str  # a burla user token of an administrator
    node_token: str
    ca_pem: str
    config: schema.ClusterConfig
    owner_credentials: object = field(repr=False, default=None)

    def api(self, method: str, path: str, body: dict | None = None, token: str | None = None, timeout_s: float = 60) -> dict:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(self.url + path, data=data, method=method, headers={
            "Authorization": f"Bearer {token or self.admin_token}", "Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=timeout_s) as answer:
            return json.loads(answer.read())

    def issue_token(self, email: str, lifetime_s: float = 3600.0) -> str:
        return self.api("POST", "/v1/tokens", {"email": email, "expires_in_s": lifetime_s})["token"]

    def nodes(self) -> list[dict]:
        return self.api("GET", "/v1/nodes")["nodes"]

    def boot(self, count: int, image: str, timeout_s: float = 120.0) -> list[str]:
        """Boot `count` standing nodes and wait until every one serves; their ids."""
        answer = self.api("POST", "/v1/nodes", {"count": count, "image": image})
        if answer["failures"]:
            raise RuntimeError("booting the test cluster's nodes failed: " + "; ".join(answer["failures"]))
        ids = [item["node_id"] for item in answer["booting"]]
        self.wait_for(lambda nodes: all(nodes.get(i, {}).get("status") in schema.SERVING_STATUSES for i in ids),
                      timeout_s, f"nodes {ids} to serve")
        return ids

    def wait_for(self, predicate, timeout_s: float, what: str) -> dict[str, dict]:
        deadline = time.monotonic() + timeout_s
        while True:
            nodes = {node["node_id"]: node for node in self.nodes()}
            if predicate(nodes):
                return nodes
            failed = [f"{n['node_id']}: {n.get('status_reason')}" for n in nodes.values() if n.get("status") == schema.FAILED]
            if time.monotonic() > deadline:
                raise TimeoutError(f"timed out after {timeout_s:.0f} s waiting for {what}; failed nodes: {failed}")
            time.sleep(0.2)


def _grant(policy, role: str, member: str) -> None:
    for binding in policy.bindings:
        if binding.role == role:
            if member not in binding.members:
                binding.members.append(member)
            return
    policy.bindings.add(role=role, members=[member])


def set_up(project: str, *, config: schema.ClusterConfig, admin_email: str, credentials=None, endpoint: str | None = None,
           service_image: str = SERVICE_IMAGE, service_env: dict[str, str] | None = None) -> TestCluster:
    """Make the cluster's resources in `project` and deploy its service; as `credentials` (an owner's)."""
    from google.cloud import compute_v1, run_v2
    from google.iam.v1 import policy_pb2

    kw = {"endpoint": endpoint, "credentials": credentials}
    iam = clients.iam(**kw)
    service_account = iam.create_service_account(project, schema.SERVICE_ACCOUNT_ID, "burla cluster service").email
    node_account = iam.create_service_account(project, schema.NODE_SERVICE_ACCOUNT_ID, "burla cluster nodes").email

    projects = clients.resource_manager(**kw)
    policy = projects.get_iam_policy(request={"resource": f"projects/{project}"})
    for role in schema.SERVICE_ROLES:
        _grant(policy, role, f"serviceAccount:{service_account}")
    for role in schema.NODE_ROLES:
        _grant(policy, role, f"serviceAccount:{node_account}")
    projects.set_iam_policy(request={"resource": f"projects/{project}", "policy": policy})
    node_policy = iam.get_iam_policy(project, node_account)
    node_policy.bindings.add(role="roles/iam.serviceAccountUser", members=[f"serviceAccount:{service_account}"])
    iam.set_iam_policy(project, node_account, node_policy)

    node_token = secrets.token_urlsafe(32)
    ca = make_ca(project)
    secret_manager = clients.secret_manager(**kw)
    values = {schema.NODE_TOKEN_SECRET: node_token, schema.CA_CERT_SECRET: ca.cert_pem, schema.CA_KEY_SECRET: ca.key_pem,
              schema.CLUSTER_SECRET: secrets.token_urlsafe(32)}
    readers = {name: [] for name in values}
    for name in schema.SERVICE_SECRETS:
        readers[name].append(f"serviceAccount:{service_account}")
    for name in schema.NODE_SECRETS:
        readers[name].append(f"serviceAccount:{node_account}")
    for name, value in values.items():
        secret = secret_manager.create_secret(parent=f"projects/{project}", secret_id=name,
                                              secret={"replication": {"automatic": {}}})
        secret_manager.add_secret_version(parent=secret.name, payload={"data": value.encode()})
        if readers[name]:
            secret_manager.set_iam_policy(request={"resource": secret.name, "policy": policy_pb2.Policy(
                bindings=[policy_pb2.Binding(role="roles/secretmanager.secretAccessor", members=readers[name])])})

    database = clients.firestore(project, schema.DATABASE, **kw)
    database.collection(schema.CONFIG_COLLECTION).document(schema.CONFIG_DOCUMENT).set(config.to_document())
    database.collection(schema.USERS).document(admin_email).set(
        {"email": admin_email, "role": schema.ROLE_ADMIN, "added_at": time.time(), "added_by": "set_up"})
    clients.storage(project, **kw).create_bucket(schema.bucket_name(project))

    firewalls = clients.firewalls(**kw)
    rule = compute_v1.Firewall(
        name=schema.FIREWALL_RULE, direction="INGRESS", target_tags=[schema.NODE_TAG],
        allowed=[compute_v1.Allowed(I_p_protocol="tcp", ports=[str(config.node_port or 8701)])],
        source_ranges=["127.0.0.1/32"],  # the installer's own address; callers are added as they come
    )
    clients.wait_global_operation(firewalls.insert(project=project, firewall_resource=rule), project=project,
                                  timeout_s=60, **kw)

    env = {"BURLA_PROJECT": project, "BURLA_NODE_SERVICE_ACCOUNT": node_account, **(service_env or {})}
    service = run_v2.Service(template=run_v2.RevisionTemplate(
        service_account=service_account, scaling=run_v2.RevisionScaling(max_instance_count=1),
        containers=[run_v2.Container(image=service_image, env=[run_v2.EnvVar(name=k, value=v) for k, v in env.items()])]))
    deployed = clients.run_services(**kw).create_service(
        parent=f"projects/{project}/locations/{config.region}", service=service, service_id=schema.SERVICE_NAME,
    ).result(timeout=120)

    admin_token = schema.new_token()
    database.collection(schema.USER_TOKENS).document(schema.token_hash(admin_token)).set(
        schema.UserToken(email=admin_email, expires_at=time.time() + 7 * 24 * 3600, label="test cluster").to_document())
    return TestCluster(project=project, region=config.region, url=deployed.uri, admin_email=admin_email,
                       admin_token=admin_token, node_token=node_token, ca_pem=ca.cert_pem, config=config,
                       owner_credentials=credentials)
