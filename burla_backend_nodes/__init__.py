"""The `nodes` backend: runs calls on machines you already have, each running `burla node start`.

Name the machines with BURLA_NODES=http(s)://host:port,... (or backend_options={"nodes": [...]})
and give the agents' token in BURLA_NODE_TOKEN; see docs/nodes.md.
"""
