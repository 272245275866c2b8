"""`burla install` / `burla uninstall` against a fresh stand-in project, run as users run them:
the `burla` command, gcloud's project, application-default credentials from a metadata server."""

from __future__ import annotations

import json
import re
import urllib.request

from burla_backend_gcp import clients, schema
from burla_backend_gcp.install import permissions
from burla_backend_gcp.standin.projects import ALWAYS_ENABLED

from .conftest import burla, burla_env, changes

ALICE = "user:alice@example.com"
STEP_LINE = re.compile(r"^  (ok|unchanged|created|updated|enabled|granted|uploaded|deployed|added|would \w+)\s+"
                       r"([^:]+):", re.M)


def grant_custom_role(standin, member: str, granted: list[str], role_id: str = "installer") -> None:
    role = f"projects/{standin.project_id}/roles/{role_id}"
    standin.iam.define_role(role, granted)
    standin.iam.grant(f"projects/{standin.project_id}", role, member)


def statuses(output: str) -> dict[str, str]:
    """step label → its status, from install's one line per step."""
    return {label: status for status, label in STEP_LINE.findall(output)}


def test_install_without_one_permission_names_exactly_it_and_changes_nothing(project, tmp_path):
    lacking = "secretmanager.secrets.create"
    grant_custom_role(project, ALICE, [p for p in permissions.INSTALL if p != lacking])
    before = len(project.requests)

    result = burla("install", env=burla_env(project, ALICE, tmp_path))

    assert result.returncode == 1, result.stdout + result.stderr
    assert re.findall(r"^\s+- (\S+)$", result.stderr, re.M) == [lacking], result.stderr
    assert "alice@example.com lacks 1 permission" in result.stderr and "nothing was changed" in result.stderr
    for way in ("roles/owner", "Secret Manager Admin", "burla install --print-role",
                f"gcloud iam roles create {permissions.ROLE_ID} --project={project.project_id}"):
        assert way in result.stderr, f"the error does not offer {way!r}:\n{result.stderr}"
    assert changes(project, before) == [], "install changed the project although a permission was missing"
    assert project.projects.enabled() == set(ALWAYS_ENABLED)


def test_a_dry_run_lists_what_would_change_and_changes_nothing(project, tmp_path):
    before = len(project.requests)
    result = burla("install", "--dry-run", env=burla_env(project, tmp_path=tmp_path))
    assert result.returncode == 0, result.stdout + result.stderr
    planned = statuses(result.stdout)
    assert planned["APIs"] == "would enable" and planned["Cloud Run service"].startswith("would"), result.stdout
    assert "nothing was changed (dry run)" in result.stdout
    assert changes(project, before) == []
    assert project.projects.enabled() == set(ALWAYS_ENABLED)


def test_an_interrupted_install_runs_again_from_where_it_stopped_and_then_changes_nothing(project, tmp_path):
    env = burla_env(project, tmp_path=tmp_path)
    project.fail_next("run.services.create", code=503)
    broken = burla("install", env=env)
    assert broken.returncode == 1
    assert "Cloud Run service:" in broken.stderr and "run `burla install` again" in broken.stderr, broken.stderr
    made = statuses(broken.stdout)
    assert made["permissions"] == "ok" and made["APIs"] == "enabled" and made["secrets"] == "created", broken.stdout

    resumed = burla("install", env=env)

    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    done = statuses(resumed.stdout)
    assert done["secrets"] == "unchanged" and done["APIs"] == "unchanged", resumed.stdout
    assert done["Cloud Run service"] == "deployed", resumed.stdout
    url = re.search(r"dashboard: (http://127\.0\.0\.1:\d+)", resumed.stdout).group(1)
    with urllib.request.urlopen(url + "/healthz", timeout=10) as answer:
        assert json.loads(answer.read()) == {"ok": True}

    # What install made is what the issue asks for, and the node port is not open to the world.
    owner = project.credentials()
    rule = clients.firewalls(endpoint=project.url, credentials=owner).get(project=project.project_id,
                                                                          firewall=schema.FIREWALL_RULE)
    assert list(rule.source_ranges) == ["10.128.0.0/9"] and list(rule.target_tags) == [schema.NODE_TAG]
    service = clients.run_services(endpoint=project.url, credentials=owner).get_service(
        name=f"projects/{project.project_id}/locations/us-central1/services/{schema.SERVICE_NAME}")
    assert service.template.service_account == f"burla-cluster@{project.project_id}.iam.gserviceaccount.com"
    policy = clients.resource_manager(endpoint=project.url, credentials=owner).get_iam_policy(
        resource=f"projects/{project.project_id}")
    cluster_roles = {b.role for b in policy.bindings if any("burla-" in m for m in b.members)}
    assert cluster_roles and not cluster_roles & {"roles/owner", "roles/editor", "roles/resourcemanager.projectIamAdmin"}

    # A second install changes nothing, and a setting changed on the dashboard survives it.
    config = clients.firestore(project.project_id, schema.DATABASE, endpoint=project.url).collection(
        schema.CONFIG_COLLECTION).document(schema.CONFIG_DOCUMENT)
    config.update({"machine_type": "n2-standard-8"})
    revision = service.latest_ready_revision
    before = len(project.requests)

    second = burla("install", env=env)

    assert second.returncode == 0, second.stdout + second.stderr
    again = statuses(second.stdout)
    assert set(again) == set(done) and set(again.values()) == {"ok", "unchanged"}, second.stdout
    assert changes(project, before) == [], "the second install changed something"
    assert config.get().to_dict()["machine_type"] == "n2-standard-8"
    service = clients.run_services(endpoint=project.url, credentials=owner).get_service(name=service.name)
    assert service.latest_ready_revision == revision


def test_a_custom_role_from_print_role_installs_and_uninstall_leaves_the_project_empty(project, tmp_path):
    env = burla_env(project, ALICE, tmp_path)
    role = burla("install", "--print-role", env=env)
    assert role.returncode == 0 and role.stdout.startswith("title: Burla installer"), role.stdout + role.stderr
    granted = re.findall(r"^- (\S+)$", role.stdout, re.M)
    assert set(granted) == set(permissions.INSTALL) | set(permissions.UNINSTALL)
    grant_custom_role(project, ALICE, granted)
    installed = burla("install", env=env)
    assert installed.returncode == 0, installed.stdout + installed.stderr

    # A node VM of the cluster, as the service boots one: billable until uninstall deletes it.
    owner = project.credentials()
    node_vm = _node_vm(project.project_id)
    instances = clients.instances(endpoint=project.url, credentials=owner)
    clients.wait_zone_operation(instances.insert(project=project.project_id, zone="us-central1-a",
                                                 instance_resource=node_vm),
                                project=project.project_id, zone="us-central1-a", endpoint=project.url,
                                credentials=owner, timeout_s=60)

    asked = burla("uninstall", env=env, input_text="n\n")
    assert asked.returncode == 1 and "Aborted" in asked.stderr, asked.stdout + asked.stderr
    assert "would delete  VMs: 1: burla-node-test" in asked.stdout, asked.stdout

    removed = burla("uninstall", "--yes", env=env)

    assert removed.returncode == 0, removed.stdout + removed.stderr
    assert _everything_in(project) == {"instances": [], "services": [], "secrets": [], "buckets": [],
                                       "service accounts": [project.default_compute_account], "firewalls": [],
                                       "databases": [], "policy members": []}
    again = burla("uninstall", "--yes", env=env)
    assert again.returncode == 0 and "nothing to remove" in again.stdout, again.stdout + again.stderr


def test_the_predefined_roles_install_names_hold_every_permission(project):
    member = "user:bob@example.com"
    for role, _ in permissions.INSTALLER_ROLES:
        project.iam.grant(f"projects/{project.project_id}", role, member)
    wanted = sorted(set(permissions.INSTALL) | set(permissions.UNINSTALL))
    assert project.iam.allowed(member, wanted, f"projects/{project.project_id}") == wanted
    project.iam.grant(f"projects/{project.project_id}", "roles/editor", "user:eve@example.com")
    lacking = set(wanted) - set(project.iam.allowed("user:eve@example.com", wanted))
    assert lacking and all(p.endswith(".setIamPolicy") for p in lacking), "Editor should lack only setIamPolicy"


def test_install_says_what_to_run_when_gcloud_the_project_or_the_login_is_missing(project, tmp_path):
    no_gcloud = burla("install", env=burla_env(project, tmp_path=tmp_path, PATH="/nonexistent"))
    assert no_gcloud.returncode == 1 and "gcloud (the Google Cloud CLI) is not installed" in no_gcloud.stderr

    unset = burla_env(project, tmp_path=tmp_path)
    unset.pop("CLOUDSDK_CORE_PROJECT")
    no_project = burla("install", env=unset)
    assert no_project.returncode == 1 and "gcloud config set project PROJECT_ID" in no_project.stderr, no_project.stderr

    logged_out = burla_env(project, tmp_path=tmp_path, NO_GCE_CHECK="true")
    for key in ("GCE_METADATA_HOST", "GCE_METADATA_IP", "GOOGLE_APPLICATION_CREDENTIALS"):
        logged_out.pop(key, None)
    no_login = burla("install", env=logged_out)
    assert no_login.returncode == 1 and "gcloud auth application-default login" in no_login.stderr, no_login.stderr


def _node_vm(project_id: str):
    from google.cloud import compute_v1

    return compute_v1.Instance(
        name="burla-node-test", machine_type="zones/us-central1-a/machineTypes/n2-standard-4",
        labels={schema.NODE_LABEL: "node"}, tags=compute_v1.Tags(items=[schema.NODE_TAG]),
        disks=[compute_v1.AttachedDisk(boot=True, auto_delete=True, initialize_params=compute_v1.AttachedDiskInitializeParams(
            source_image=schema.DEFAULT_BOOT_IMAGE, disk_size_gb=50))],
        network_interfaces=[compute_v1.NetworkInterface()],
        metadata=compute_v1.Metadata(items=[compute_v1.Items(key="startup-script", value="sleep 300")]),
        service_accounts=[compute_v1.ServiceAccount(email=f"burla-node@{project_id}.iam.gserviceaccount.com",
                                                    scopes=["https://www.googleapis.com/auth/cloud-platform"])])


def _everything_in(standin) -> dict[str, list[str]]:
    """Every resource of the kinds install makes, as the APIs list them."""
    owner, url, project = standin.credentials(), standin.url, standin.project_id
    instances = [i.name for _, scoped in clients.instances(endpoint=url, credentials=owner).aggregated_list(
        request={"project": project}) for i in scoped.instances]
    services = [s.name for s in clients.run_services(endpoint=url, credentials=owner).list_services(
        parent=f"projects/{project}/locations/us-central1")]
    secrets = [s.name for s in clients.secret_manager(endpoint=url, credentials=owner).list_secrets(
        parent=f"projects/{project}")]
    buckets = [b.name for b in clients.storage(project, endpoint=url, credentials=owner).list_buckets()]
    accounts = [a.email for a in clients.iam(endpoint=url, credentials=owner).list_service_accounts(project)]
    firewalls = [f.name for f in clients.firewalls(endpoint=url, credentials=owner).list(project=project)]
    databases = [d.name for d in clients.firestore_admin(endpoint=url, credentials=owner).list_databases(
        parent=f"projects/{project}").databases]
    policy = clients.resource_manager(endpoint=url, credentials=owner).get_iam_policy(resource=f"projects/{project}")
    members = sorted({m for b in policy.bindings for m in b.members if "burla" in m})
    return {"instances": instances, "services": services, "secrets": secrets, "buckets": buckets,
            "service accounts": accounts, "firewalls": firewalls, "databases": databases, "policy members": members}


def test_installing_a_new_version_rolls_out_the_service_and_changes_nothing_else(project, monkeypatch):
    from burla_backend_gcp import install as installer

    lines: list[str] = []
    ctx = installer.make_context(project=project.project_id, endpoint=project.url, credentials=project.credentials(),
                                 account="owner@example.com", echo=lines.append)
    first = installer.install(ctx)
    monkeypatch.setattr("burla_backend_gcp.install.code.__version__", "99.0.0")

    update = installer.install(ctx)

    actions = {outcome.label: outcome.action for outcome in update.run.outcomes}
    assert actions.pop("service code") == "upload" and actions.pop("Cloud Run service") == "update", lines
    assert set(actions.values()) == {"none"}, lines
    assert update.cluster_url == first.cluster_url
    service = clients.run_services(endpoint=project.url, credentials=project.credentials()).get_service(
        name=f"projects/{project.project_id}/locations/us-central1/services/{schema.SERVICE_NAME}")
    assert service.labels["burla-version"] == "99-0-0" and "-00002-" in service.latest_ready_revision
    with urllib.request.urlopen(update.cluster_url + "/healthz", timeout=10) as answer:
        assert answer.status == 200
