"""The node agent's HTTP surface: auth, health, TLS, hostile requests, idle shutdown."""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import os
import socket
import subprocess
import sys
import time

import msgpack
import pytest

from burla_core import __version__
from burla_core.node.protocol import python_version
from burla_core.serialization import dumps

from .node_helpers import Http, read_events, result_indices


def double(x):
    return x * 2


def test_health_reports_slots_cpus_ram_gpus_image_and_versions(node_http):
    http = node_http
    status, _, body = http.request("GET", "/v1/health")
    assert status == 200, body
    import json

    health = json.loads(body)
    for key in ("slots", "cpus", "ram_gb", "gpus", "image", "python", "burla", "packages", "instance"):
        assert key in health, f"health lacks {key!r}: {health}"
    assert health["python"] == python_version()
    assert health["burla"] == __version__
    assert health["slots"] >= 1 and health["cpus"] >= 1 and health["ram_gb"] > 0
    assert isinstance(health["gpus"], list)
    assert health["packages"]["aiohttp"] != "not installed"


ROUTES = [
    ("GET", "/v1/health"),
    ("GET", "/v1/jobs"),
    ("POST", "/v1/jobs"),
    ("GET", "/v1/jobs/some-job"),
    ("DELETE", "/v1/jobs/some-job"),
    ("POST", "/v1/jobs/some-job/batches"),
    ("GET", "/v1/jobs/some-job/events"),
    ("POST", "/v1/jobs/some-job/ack?seq=1"),
    ("POST", "/v1/jobs/some-job/cancel"),
    ("GET", "/no/such/route"),
]


@pytest.mark.parametrize("presented", [None, "wrong-token", "", "test-token-"])
def test_every_request_without_the_right_token_gets_401_and_changes_nothing(node_http, node_token, presented):
    http = node_http
    status, _, _ = http.create_job("auth-probe", double)
    assert status == 201
    for method, path in ROUTES:
        status, _, body = http.request(method, path, token=presented)
        assert status == 401, f"{method} {path} with token {presented!r} answered {status}: {body!r}"
        assert node_token.encode() not in body
    # Other schemes and a right token in the wrong place are refused too.
    status, _, _ = http.request("GET", "/v1/health", token=None, headers={"Authorization": f"Basic {node_token}"})
    assert status == 401
    status, _, _ = http.request("GET", f"/v1/health?token={node_token}", token=None)
    assert status == 401
    # Nothing changed: a job creation was refused, the existing job is untouched.
    body = msgpack.packb({"job_id": "never", "function": b"x"}, use_bin_type=True)
    assert http.request("POST", "/v1/jobs", body, token="nope")[0] == 401
    assert http.request("DELETE", "/v1/jobs/auth-probe", token="nope")[0] == 401
    status, _, body = http.request("GET", "/v1/jobs")
    job_ids = [job["job_id"] for job in __import__("json").loads(body)["jobs"]]
    assert "never" not in job_ids and "auth-probe" in job_ids
    assert http.request("DELETE", "/v1/jobs/auth-probe")[0] == 200


def test_the_agent_refuses_to_start_without_a_token(tmp_path):
    env = dict(os.environ)
    env.pop("BURLA_NODE_TOKEN", None)
    result = subprocess.run(
        [sys.executable, "-m", "burla_core.node", "start", "--port", "0"],
        capture_output=True, text=True, env=env, timeout=30,
    )
    assert result.returncode != 0
    assert "token" in result.stderr and "BURLA_NODE_TOKEN" in result.stderr


def test_the_agent_reads_its_token_from_a_file(make_agent, tmp_path):
    token_file = tmp_path / "token"
    token_file.write_text("file-token-0123456789abcdef\n")
    agent = make_agent("--token-file", str(token_file), token=None)
    http = Http(agent.url, "file-token-0123456789abcdef")
    assert http.request("GET", "/v1/health")[0] == 200
    assert http.request("GET", "/v1/health", token="other")[0] == 401


def test_the_agent_refuses_a_non_loopback_address_without_tls(node_token):
    env = dict(os.environ, BURLA_NODE_TOKEN=node_token)
    result = subprocess.run(
        [sys.executable, "-m", "burla_core.node", "start", "--host", "0.0.0.0", "--port", "0"],
        capture_output=True, text=True, env=env, timeout=30,
    )
    assert result.returncode != 0
    assert "TLS" in result.stderr and "--insecure" in result.stderr
    assert node_token not in result.stderr


def test_the_token_never_appears_in_logs_or_error_messages(make_agent, node_token):
    agent = make_agent("--access-log")
    http = Http(agent.url, node_token)
    answers = [
        http.request("GET", "/v1/health"),
        http.request("GET", "/v1/health", token="wrong"),
        http.request("GET", "/v1/jobs/nope/events"),
        http.request("POST", "/v1/jobs", b"\xc1garbage"),
        http.create_job("tok-job", double),
        http.request("DELETE", "/v1/jobs/tok-job"),
    ]
    time.sleep(0.3)
    log = agent.log()
    assert "GET /v1/health" in log, "the access log should record requests"
    assert node_token not in log
    for status, headers, body in answers:
        assert node_token.encode() not in body
        assert node_token not in str(headers)


# --- TLS --------------------------------------------------------------------------------------


def make_self_signed(tmp_path):
    x509 = pytest.importorskip("cryptography.x509")
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "burla test node")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp_path / "node.crt", tmp_path / "node.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return str(cert_path), str(key_path)


def test_tls_serves_https_and_the_transport_verifies_the_node_against_the_given_ca(make_agent, node_token, tmp_path, monkeypatch):
    from burla import remote_parallel_map
    from burla_core.errors import NodeDisconnected

    cert, key = make_self_signed(tmp_path)
    agent = make_agent("--tls-cert", cert, "--tls-key", key)
    assert agent.url.startswith("https://127.0.0.1:")
    monkeypatch.setenv("BURLA_NODE_TOKEN", node_token)
    monkeypatch.setenv("BURLA_NODES", agent.url)
    monkeypatch.setenv("BURLA_NODE_CA", cert)
    assert remote_parallel_map(double, [1, 2, 3], spinner=False, backend="nodes") == [2, 4, 6]

    # Without the CA, the node's certificate is not trusted, and the error says so.
    monkeypatch.delenv("BURLA_NODE_CA")
    with pytest.raises(NodeDisconnected) as caught:
        remote_parallel_map(double, [1], spinner=False, backend="nodes")
    assert "certificate" in str(caught.value).lower()
    assert node_token not in str(caught.value)

    # Plain HTTP to the TLS port gets nowhere.
    with pytest.raises((ConnectionError, OSError, Exception)):
        Http(agent.url.replace("https", "http"), node_token).request("GET", "/v1/health", timeout=3)


# --- hostile and malformed requests -----------------------------------------------------------


def test_malformed_requests_get_a_4xx_with_a_message_and_other_jobs_go_on(node_http, agent, node_token):
    http = node_http
    assert http.create_job("steady", double)[0] == 201

    def expect(answer, status, words):
        got, _, body = answer
        assert got == status, f"expected {status}, got {got}: {body!r}"
        message = __import__("json").loads(body)["message"]
        assert words.lower() in message.lower(), f"message {message!r} should mention {words!r}"

    expect(http.request("POST", "/v1/jobs", b"\xc1\xc1\xc1"), 400, "msgpack")
    expect(http.request("POST", "/v1/jobs", msgpack.packb([1, 2, 3])), 400, "map")
    expect(http.request("POST", "/v1/jobs", msgpack.packb({"job_id": 5})), 400, "job_id")
    expect(http.create_job("bad id with spaces", double), 400, "job_id")
    expect(http.create_job("typed", double, slots="two"), 400, "slots")
    expect(http.create_job("typed", double, func_cpu=True), 400, "func_cpu")
    expect(http.create_job("old-python", double, python="2.7.18"), 409, "2.7.18")
    expect(http.create_job("old-burla", double, burla="0.0.1"), 409, "0.0.1")
    expect(http.create_job("giant", double, func_ram=100000), 409, "func_ram")
    expect(http.request("POST", "/v1/jobs/steady/batches", b"\x92\x01"), 400, "4-byte header")
    expect(http.post_raw_batch("steady", b"\xc1\xc1\xc1"), 400, "msgpack")
    expect(http.request("POST", "/v1/jobs/steady/batches", b"\x00\x00\x10\x00abc"), 400, "header declares")
    expect(http.post_raw_batch("steady", [1, 2]), 400, "map")
    expect(http.post_raw_batch("steady", {"batch_id": -1, "items": [[0, 1]]}, b"x"), 400, "batch_id")
    expect(http.post_raw_batch("steady", {"batch_id": "one", "items": [[0, 1]]}, b"x"), 400, "batch_id")
    expect(http.post_raw_batch("steady", {"batch_id": 1, "items": [[0, "text"]]}, b"x"), 400, "size")
    expect(http.post_raw_batch("steady", {"batch_id": 1, "items": [[-3, 1]]}, b"x"), 400, "input_index")
    expect(http.post_raw_batch("steady", {"batch_id": 1, "items": []}), 400, "empty")
    expect(http.post_raw_batch("steady", {"batch_id": 1, "items": 7}), 400, "items")
    expect(http.post_raw_batch("steady", {"batch_id": 1, "items": [[0, 2**40]]}, b"x"), 400, "more payload bytes")
    expect(http.post_raw_batch("steady", {"batch_id": 1, "items": [[0, 1]]}, b"xyz"), 400, "follow the last item")
    expect(http.request("GET", "/v1/jobs/steady/events?after=x"), 400, "after")
    expect(http.request("GET", "/v1/jobs/steady/events?after=-1"), 409, "after")
    expect(http.request("GET", "/v1/jobs/steady/events?after=999"), 409, "after")
    expect(http.request("POST", "/v1/jobs/steady/ack?seq=abc"), 400, "seq")
    for method, path in [("GET", "/v1/jobs/ghost"), ("POST", "/v1/jobs/ghost/batches"), ("GET", "/v1/jobs/ghost/events"),
                         ("POST", "/v1/jobs/ghost/ack?seq=1"), ("DELETE", "/v1/jobs/ghost")]:
        expect(http.request(method, path), 404, "no job")
    # A body that declares 10 GB is refused before it is read.
    expect(
        http.request("POST", "/v1/jobs/steady/batches", b"", headers={"Content-Length": str(10 * 10**9)}), 413, "declares"
    )
    # A truncated body: the agent notices, answers or drops the connection, and goes on.
    raw = socket.create_connection(("127.0.0.1", agent.port), timeout=5)
    raw.sendall(
        b"POST /v1/jobs/steady/batches HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + node_token.encode()
        + b"\r\nContent-Length: 1000\r\n\r\n" + b"\x82" * 10
    )
    raw.shutdown(socket.SHUT_WR)
    raw.settimeout(5)
    try:
        answer = raw.recv(4096)
    except OSError:
        answer = b""
    raw.close()
    assert answer == b"" or b" 400 " in answer.split(b"\r\n")[0], answer
    # The same input index twice in one job is refused.
    assert http.post_batch("steady", 1, [(0, dumps((1,)))])[0] == 202
    expect(http.post_batch("steady", 2, [(0, dumps((1,)))]), 409, "input 0")
    # And the steady job still runs.
    assert http.post_batch("steady", 3, [(index, dumps((index,))) for index in range(1, 20)])[0] == 202
    frames = read_events(agent.url, node_token, "steady", until=lambda f: len(result_indices(f)) >= 20)
    assert sorted(result_indices(frames)) == list(range(20))
    assert http.request("GET", "/v1/health")[0] == 200
    assert http.request("DELETE", "/v1/jobs/steady")[0] == 200


# --- idle shutdown ----------------------------------------------------------------------------


def test_idle_shutdown_runs_the_command_after_no_job_and_no_request(make_agent, tmp_path):
    marker = tmp_path / "shut-down"
    agent = make_agent("--idle-shutdown", "1", "--shutdown-command", f"touch {marker}")
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and agent.alive():
        time.sleep(0.1)
    assert marker.exists(), "the shutdown command did not run"
    assert not agent.alive(), "the agent should exit after its shutdown command"


def test_requests_and_jobs_keep_an_idle_shutdown_agent_up(make_agent, node_token, tmp_path):
    marker = tmp_path / "shut-down"
    agent = make_agent("--idle-shutdown", "1", "--shutdown-command", f"touch {marker}")
    http = Http(agent.url, node_token)
    for _ in range(8):  # requests every 0.25 s for 2 s
        assert http.request("GET", "/v1/health")[0] == 200
        time.sleep(0.25)
    assert http.create_job("holding", double)[0] == 201
    time.sleep(1.6)  # no request, but a job
    assert not marker.exists() and agent.alive()
    assert http.request("DELETE", "/v1/jobs/holding")[0] == 200
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not marker.exists():
        time.sleep(0.1)
    assert marker.exists()


def test_unauthenticated_requests_do_not_keep_the_agent_up(make_agent, tmp_path):
    marker = tmp_path / "shut-down"
    agent = make_agent("--idle-shutdown", "1", "--shutdown-command", f"touch {marker}")
    http = Http(agent.url, "wrong")
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not marker.exists():
        try:
            http.request("GET", "/v1/health", timeout=1)
        except OSError:
            pass
        time.sleep(0.2)
    assert marker.exists()


def start_and_say_who_started_before(work, index):
    """Record that this input started, and which inputs had started before it; input 0 holds its
    slot for a second, so the others run one after another in the node's other slot."""
    before = sorted(name for name in os.listdir(work) if name.startswith("started-"))
    open(os.path.join(work, f"started-{index}"), "w").close()
    time.sleep(1.0 if index == 0 else 0.2)
    return before


def test_a_slow_upload_never_lets_a_later_batch_overtake_it(agent, node_token, tmp_path, monkeypatch):
    """A node gets its batches in the order the scheduler submitted them. When the upload of the
    second first-round batch was slow (a TLS handshake on a new connection), a read-ahead batch sent
    beside it reached the node first and took the free slot: input 2 ran before input 1 (and in
    the conformance suite input 1 waited behind it while input 0 waited for input 1)."""
    from burla import remote_parallel_map
    from burla_core.node.client import NodeClient

    real_call = NodeClient.call
    uploads = []

    async def slow_second_upload(self, method, suffix, *args, **kwargs):
        if method == "POST" and suffix.endswith("/batches"):
            uploads.append(suffix)
            if len(uploads) == 2:
                await asyncio.sleep(0.5)
        return await real_call(self, method, suffix, *args, **kwargs)

    monkeypatch.setattr(NodeClient, "call", slow_second_upload)
    monkeypatch.setenv("BURLA_NODE_TOKEN", node_token)
    monkeypatch.setenv("BURLA_NODES", agent.url)
    results = remote_parallel_map(start_and_say_who_started_before, [(str(tmp_path), i) for i in range(4)],
                                  spinner=False, backend="nodes")
    assert len(uploads) >= 3, f"the job should have been sent in several batches: {uploads}"
    started_before_input_1 = results[1]
    assert "started-2" not in started_before_input_1 and "started-3" not in started_before_input_1, (
        f"a read-ahead batch overtook the first round: before input 1 started, these had: {started_before_input_1}")
