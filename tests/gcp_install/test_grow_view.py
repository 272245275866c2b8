"""Right after a grow starts, the job's view of the cluster shows the nodes booting for it: a
caller that asks at once must never be told that growth ended with no node (it then gives up
with NoNodes while its VMs boot)."""

from __future__ import annotations

from .service_client import admin_headers, call


def test_the_nodes_a_grow_boots_are_in_the_jobs_view_at_once(installed):
    url = installed.url
    token = call("POST", url + "/v1/tokens", headers=admin_headers(installed.standin),
                 body={"email": "owner@example.com"}).json()["token"]
    auth = {"Authorization": f"Bearer {token}"}
    wire = {"func_cpu": 1, "func_ram": 1, "grow": True, "python": "3.11.7", "burla": "0.1.0"}
    for attempt in range(3):
        job_id = call("POST", url + "/v1/jobs", headers=auth, body={"call": wire}).json()["job_id"]
        started = call("POST", url + f"/v1/jobs/{job_id}/start", headers=auth, body={"wanted_slots": 2})
        assert started.status == 200 and started.json()["booting"], started.text
        view = call("GET", url + f"/v1/jobs/{job_id}/nodes?version=-1&timeout=0", headers=auth).json()
        booting = {item["node_id"] for item in view["booting"]} | {node["node_id"] for node in view["nodes"]}
        assert view["growing"] or booting, f"attempt {attempt}: the job's view lost its booting nodes: {view}"
        assert {item["node_id"] for item in started.json()["booting"]} <= booting, view
