"""The `dask` backend: runs calls on a Dask cluster you already operate, through `distributed.Client`.

Give the scheduler's address with backend_options={"address": "tcp://host:8786"} or
BURLA_DASK_ADDRESS; see docs/dask.md. Nothing of dask is imported until the backend is used.
"""
