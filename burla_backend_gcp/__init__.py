"""Backend "gcp": a cluster in the user's own Google Cloud project (docs/gcp.md).

The caller's side: `plugin` (the records), `settings` (cluster URL and burla token),
`cluster_client`, `provisioner`, `transport`, `cluster_jobs` (detached jobs). The cluster's side:
`service/` (the control plane on Cloud Run), `vm/` (the VMs' startup script and node supervisor),
`runner` (detached jobs' runners). Shared: `schema` (every name), `fit`, `tls`, `clients` (the one
factory of Google clients, pointed at Google or at the stand-in), `netguard`, `errors`; and
`standin/` (Google Cloud's APIs on 127.0.0.1), `testcluster` / `testenv` (a cluster on it).
Importing this package loads no Google library.
"""
