"""The `ray` backend: runs calls on a Ray cluster you already operate.

Give the cluster's address with backend_options={"address": "HOST:6379"} or RAY_ADDRESS; see
docs/ray.md. Nothing of ray is imported until the backend is used.
"""
