"""The caller's environment on every node: what a job brings so that any node can run it.

    caller: job.describe_job_environment(function_bytes, backend_options)
        └─► JobEnvironment(packages: EnvironmentDescription | None, code: CodeBundle | None)
              │ travels with the job request, once per job and node
              ▼
    node:   burla_core.node.environments: one environment per package set (installed once,
            cached, shared by jobs), the code unpacked once per archive, workers started in it

`description` says which distributions are installed here; `localcode` archives the modules no
index has; `job` puts both together for one job; `activate` is the worker's side of local code.
Remote transports (burla_core.node.client) attach both to every job; the local backend needs
neither, its workers run in the caller's own environment. Nothing is imported here, so that a
worker importing `activate` loads nothing else.
"""
