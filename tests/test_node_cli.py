"""`burla node health` and `burla node jobs` against real agents on 127.0.0.1, run as a user
runs them (a subprocess): exit 0 only when every node answered, and one line on stderr naming
each node that did not and why."""

from __future__ import annotations

import json
import socket
import subprocess
import sys

import pytest

from burla_core.node.testing import start_agents

from .conftest import python_env

TOKEN = "node-cli-test-token-0123456789"


@pytest.fixture(scope="module")
def agent():
    (started,) = start_agents(1, TOKEN)
    yield started
    started.close()


def closed_port_url() -> str:
    """A loopback URL nothing listens on (a port just freed)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def burla_node(*args: str, token: str | None = TOKEN, **env: str) -> subprocess.CompletedProcess:
    environment = python_env()
    for name in ("BURLA_NODE_TOKEN", "BURLA_NODES", "BURLA_NODE_CA"):  # only what the test gives
        environment.pop(name, None)
    environment.update(env)
    if token is not None:
        environment["BURLA_NODE_TOKEN"] = token
    return subprocess.run(
        [sys.executable, "-m", "burla_cli", "node", *args], capture_output=True, text=True, env=environment, timeout=60
    )


def reports(stdout: str) -> list[dict]:
    """The JSON objects `burla node health` printed, one after another."""
    decoder, position, found = json.JSONDecoder(), 0, []
    text = stdout.strip()
    while position < len(text):
        report, position = decoder.raw_decode(text, position)
        found.append(report)
        while position < len(text) and text[position].isspace():
            position += 1
    return found


@pytest.mark.parametrize("command", ["health", "jobs"])
def test_every_node_answering_exits_zero(agent, command):
    result = burla_node(command, BURLA_NODES=agent.url)
    assert result.returncode == 0, result.stderr
    assert result.stderr == "", result.stderr
    if command == "health":
        assert [report["url"] for report in reports(result.stdout)] == [agent.url]
    else:
        assert result.stdout.strip() == f"{agent.url}  no jobs", result.stdout


@pytest.mark.parametrize("command", ["health", "jobs"])
def test_a_node_that_is_down_makes_the_command_fail_with_one_line_naming_it(agent, command):
    down = closed_port_url()
    result = burla_node(command, "--nodes", f"{down},{agent.url}")
    assert result.returncode == 1, f"`burla node {command}` exited {result.returncode} with a node down:\n{result.stderr}"
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and down in lines[0] and "did not answer" in lines[0], result.stderr
    assert agent.url in result.stdout, "the node that answered is still reported"
    if command == "health":
        assert [report["url"] for report in reports(result.stdout)] == [agent.url]


@pytest.mark.parametrize("command", ["health", "jobs"])
def test_a_node_refusing_the_token_makes_the_command_fail_saying_so(agent, command, tmp_path):
    wrong = tmp_path / "wrong-token"
    wrong.write_text("not-the-token-of-this-cluster\n")
    result = burla_node(command, "--nodes", agent.url, "--token-file", str(wrong), token=None)
    assert result.returncode == 1, f"`burla node {command}` exited {result.returncode} with a refused token"
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and agent.url in lines[0] and "refused the token" in lines[0], result.stderr
    assert "not-the-token" not in result.stderr + result.stdout


def test_the_token_file_is_read_for_health(agent, tmp_path):
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    result = burla_node("health", "--nodes", agent.url, "--token-file", str(token_file), token=None)
    assert result.returncode == 0, result.stderr
    assert TOKEN not in result.stdout


def test_no_token_and_no_nodes_are_usage_errors(agent):
    no_token = burla_node("health", "--nodes", agent.url, token=None)
    assert no_token.returncode == 2 and "BURLA_NODE_TOKEN" in no_token.stderr, no_token.stderr
    no_nodes = burla_node("jobs")
    assert no_nodes.returncode == 2 and "BURLA_NODES" in no_nodes.stderr, no_nodes.stderr


def test_health_checks_a_tls_node_against_the_ca_given(tmp_path):
    from .node.test_agent_http import make_self_signed

    cert, key = make_self_signed(tmp_path)
    (tls_agent,) = start_agents(1, TOKEN, args=("--tls-cert", cert, "--tls-key", key))
    try:
        untrusted = burla_node("health", "--nodes", tls_agent.url)
        assert untrusted.returncode == 1 and "certificate" in untrusted.stderr, untrusted.stderr
        trusted = burla_node("health", "--nodes", tls_agent.url, "--ca", cert)
        assert trusted.returncode == 0, trusted.stderr
        from_env = burla_node("jobs", "--nodes", tls_agent.url, BURLA_NODE_CA=cert)
        assert from_env.returncode == 0, from_env.stderr
    finally:
        tls_agent.close()


def test_node_start_refuses_a_port_out_of_range_without_a_traceback():
    result = burla_node("start", "--port", "99999")
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr and "OverflowError" not in result.stderr, result.stderr
    assert "--port" in result.stderr and "0<=x<=65535" in result.stderr, result.stderr


def start_with_secrets_on_stdin(line: bytes, *args: str) -> subprocess.Popen:
    environment = python_env()
    environment.pop("BURLA_NODE_TOKEN", None)
    agent = subprocess.Popen(
        [sys.executable, "-m", "burla_cli", "node", "start", "--port", "0", "--secrets-on-stdin", *args],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=environment,
    )
    agent.stdin.write(line)
    agent.stdin.close()
    return agent


def test_an_agent_takes_its_token_and_tls_on_stdin_and_keeps_them_off_the_disk(tmp_path):
    from .node.test_agent_http import make_self_signed

    cert, key = make_self_signed(tmp_path)
    secrets = {"token": TOKEN, "tls_cert": open(cert).read(), "tls_key": open(key).read()}
    (tmp_path / "node.key").unlink()  # the agent must not need the files
    agent = start_with_secrets_on_stdin(json.dumps(secrets).encode() + b"\n")
    try:
        line = agent.stdout.readline().decode()
        assert line.startswith("burla node agent listening on https://127.0.0.1:"), agent.stderr.read()
        url = line.split()[-1]
        trusted = burla_node("health", "--nodes", url, "--ca", cert)
        assert trusted.returncode == 0, trusted.stderr
        wrong = burla_node("health", "--nodes", url, "--ca", cert, token="another-token-0123456789abc")
        assert wrong.returncode == 1 and "token" in wrong.stderr.lower(), wrong.stderr
    finally:
        agent.terminate()
        agent.wait(timeout=30)


@pytest.mark.parametrize("line, says", [
    (b"", "stdin closed"),
    (b"not json\n", "not a JSON object"),
    (b'{"tls_cert": "x"}\n', 'no "token"'),
    (b'{"token": "node-cli-test-token-0123456789", "tls_cert": "PEM"}\n', '"tls_cert" and "tls_key"'),
])
def test_secrets_on_stdin_that_are_missing_or_malformed_are_a_usage_error(line, says):
    agent = start_with_secrets_on_stdin(line)
    agent.wait(timeout=60)
    stderr = agent.stderr.read()
    agent.stdout.close()
    agent.stderr.close()
    assert agent.returncode == 2, stderr
    assert says in stderr.decode() and "Traceback" not in stderr.decode(), stderr


def test_secrets_on_stdin_and_a_token_file_are_one_or_the_other(tmp_path):
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN)
    result = burla_node("start", "--secrets-on-stdin", "--token-file", str(token_file))
    assert result.returncode == 2 and "one or the other" in result.stderr, result.stderr
