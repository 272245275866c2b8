"""The cluster service: the control plane of a gcp cluster, deployed on Cloud Run.

It authenticates callers (auth.py), keeps the cluster's state in Firestore (store.py, with the
names of ../schema.py), hands callers the nodes that fit their call (api.py, registry.py), boots
and deletes VMs through its own service account (grow.py, instances.py), admits callers'
addresses in the node firewall (firewall.py) and runs detached jobs' records (detached.py).
`python -m burla_backend_gcp.service` runs it; `app.make_app(settings)` builds it.
"""
