"""Fixtures for the node agent's tests: agents run as subprocesses on free 127.0.0.1 ports."""

from __future__ import annotations

import secrets

import pytest

from burla_core.node.testing import AgentProcess, start_agents
from .node_helpers import Http


@pytest.fixture(scope="session")
def node_token() -> str:
    return "test-token-" + secrets.token_hex(12)


@pytest.fixture(scope="module")
def agent(node_token):
    """One agent shared by a module's tests (each test uses its own job ids)."""
    (started,) = start_agents(1, node_token)
    yield started
    started.close()


@pytest.fixture
def make_agent(node_token):
    """Start agents with extra `burla node start` arguments; all are stopped after the test."""
    made: list[AgentProcess] = []

    def make(*args: str, token: str | None = node_token, env: dict | None = None) -> AgentProcess:
        process = AgentProcess(token, args, env)
        made.append(process)
        return process.start()

    yield make
    for process in made:
        process.close()


@pytest.fixture
def node_http(agent, node_token) -> Http:
    return Http(agent.url, node_token)
