"""The nodes backend's test environment: with BURLA_NODES unset, two node agents on 127.0.0.1
(subprocesses of the test run), their token in a file only this run can read."""

from __future__ import annotations

import contextlib
import os
import secrets
import tempfile
from typing import Iterator

from burla_core.hookspecs import TestEnvironment

from .settings import NODES_ENV

TEST_AGENTS = 2


@contextlib.contextmanager
def nodes_test_environment() -> Iterator[TestEnvironment]:
    if os.environ.get(NODES_ENV):
        yield TestEnvironment()  # the user's own agents: use them as configured
        return
    from burla_core.node.testing import start_agents

    token = secrets.token_urlsafe(24)
    with tempfile.TemporaryDirectory(prefix="burla-nodes-test-") as directory:
        token_file = os.path.join(directory, "token")
        with open(os.open(token_file, os.O_WRONLY | os.O_CREAT, 0o600), "w") as handle:
            handle.write(token)
        agents = start_agents(TEST_AGENTS, token)
        try:
            yield TestEnvironment(backend_options={"nodes": ",".join(agent.url for agent in agents), "token_file": token_file})
        finally:
            for agent in agents:
                agent.close()
