"""Faults while a job runs on node agents; every test checks that each result arrives exactly
once: no input lost, none delivered twice."""

from __future__ import annotations

import collections
import os
import signal
import socket
import threading
import time

import pytest

from burla import remote_parallel_map
from burla_core.node.testing import AgentProcess, start_agents
from burla_core.types import NODE_LOST, EventSink

TOKEN = "node-faults-test-token-0123456789"
INPUTS = 300


@pytest.fixture
def agents(monkeypatch):
    started: list[AgentProcess] = []

    def start(count: int) -> list[AgentProcess]:
        new = start_agents(count, TOKEN)
        started.extend(new)
        monkeypatch.setenv("BURLA_NODES", ",".join(agent.url for agent in new))
        monkeypatch.setenv("BURLA_NODE_TOKEN", TOKEN)
        return new

    yield start
    for agent in started:
        agent.close()


def slow_identity(x, marker_dir=None):
    import os
    import time

    if marker_dir is not None and x == 40:
        with open(os.path.join(marker_dir, "worker.pid"), "w") as handle:
            handle.write(str(os.getpid()))
    time.sleep(0.02)
    return x


def run_counting(inputs, fault, at: float, **options) -> tuple[collections.Counter, float]:
    """Run the job (as a generator, so a duplicate would show), doing `fault()` `at` seconds after
    its first result arrived: mid-job, however long the job took to start on a busy machine."""
    timer = threading.Timer(at, fault)
    started = time.monotonic()
    counts: collections.Counter = collections.Counter()
    try:
        for result in remote_parallel_map(slow_identity, inputs, spinner=False, generator=True, backend="nodes", **options):
            if not counts:
                timer.start()
            counts[result] += 1
    finally:
        timer.cancel()
        if timer.is_alive():
            timer.join()
    return counts, time.monotonic() - started


def assert_exactly_once(counts: collections.Counter, expected: list) -> None:
    twice = {value: count for value, count in counts.items() if count > 1}
    missing = set(expected) - set(counts)
    assert not twice, f"results delivered more than once: {twice}"
    assert not missing, f"results never delivered: {sorted(missing)[:20]} ({len(missing)} in all)"
    assert sum(counts.values()) == len(expected)


def test_sigkill_of_one_of_three_node_agents_mid_job(agents, capsys):
    nodes = agents(3)
    counts, elapsed = run_counting(list(range(INPUTS)), nodes[1].kill, at=0.4, backend_options={"loss_seconds": "2"})
    assert_exactly_once(counts, list(range(INPUTS)))
    assert "was lost" in capsys.readouterr().err


def test_a_frozen_node_is_detected_within_ten_seconds(agents):
    """SIGSTOP: the process is there, its socket accepts, nothing answers. Default settings."""
    from burla_core.node.transport import HttpSettings, HttpTransport
    from burla_core.serialization import dumps_function, dumps_input
    from burla_core.types import InputBatch, JobSpec, NodeInfo, ResourceRequest

    (node,) = agents(1)
    job = JobSpec("frozen-job", dumps_function(slow_identity), "slow_identity", ResourceRequest(func_ram=1))
    events = EventSink()
    session = HttpTransport(HttpSettings(token=TOKEN)).open_session(NodeInfo(node.url, 2, 4.0, address=node.url), job, 2, events)
    session.submit(InputBatch(0, [(i, dumps_input(i, i)) for i in range(2000)]))
    time.sleep(0.5)
    node.freeze()
    frozen_at = time.monotonic()
    lost_at = None
    while time.monotonic() - frozen_at < 15:
        event = events.get(0.1)
        if event is not None and event[0] == NODE_LOST:
            lost_at = time.monotonic()
            break
    node.thaw()
    session.close()
    assert lost_at is not None, "the frozen node was never reported lost"
    assert lost_at - frozen_at < 10, f"detection took {lost_at - frozen_at:.1f} s"
    # Once reported lost, the session passes nothing more on, even though the node came back.
    time.sleep(1.0)
    while (event := events.get_nowait()) is not None:
        assert event[0] not in ("results", "error"), f"an event after NODE_LOST: {event[0]}"


def test_sigstop_of_one_node_then_resume_mid_job(agents, capsys):
    nodes = agents(3)

    def freeze_then_thaw():
        nodes[2].freeze()
        threading.Timer(3.5, nodes[2].thaw).start()  # resumed after it was declared lost

    counts, _ = run_counting(list(range(INPUTS)), freeze_then_thaw, at=0.4, backend_options={"loss_seconds": "2"})
    assert_exactly_once(counts, list(range(INPUTS)))
    time.sleep(0.2)
    assert "was lost" in capsys.readouterr().err


def test_a_short_freeze_loses_nothing_and_no_node(agents, capsys):
    nodes = agents(2)

    def pause():
        nodes[0].freeze()
        threading.Timer(1.0, nodes[0].thaw).start()

    counts, _ = run_counting(list(range(INPUTS)), pause, at=0.3)
    assert_exactly_once(counts, list(range(INPUTS)))
    assert "was lost" not in capsys.readouterr().err, "a one-second pause must not count as a lost node"


class CuttingProxy:
    """Forwards 127.0.0.1 connections to an agent, and cuts the first event streams after the
    given numbers of response bytes: in the middle of a frame, as a flaky network would."""

    def __init__(self, upstream_port: int, cuts: list[int]) -> None:
        self.upstream_port = upstream_port
        self.cuts = list(cuts)
        self.cuts_done = 0
        self.lock = threading.Lock()
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self.closed:
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.upstream_port))
            state = {"cut_at": None, "down": 0}
            threading.Thread(target=self._up, args=(client, upstream, state), daemon=True).start()
            threading.Thread(target=self._down, args=(client, upstream, state), daemon=True).start()

    def _up(self, client, upstream, state) -> None:
        try:
            while data := client.recv(65536):
                if b"/events" in data.split(b"\r\n", 1)[0]:
                    with self.lock:
                        if self.cuts:
                            state["cut_at"] = state["down"] + self.cuts.pop(0)
                upstream.sendall(data)
        except OSError:
            pass
        self._close(client, upstream)

    def _down(self, client, upstream, state) -> None:
        try:
            while data := upstream.recv(65536):
                cut_at = state["cut_at"]
                if cut_at is not None and state["down"] + len(data) >= cut_at:
                    client.sendall(data[: cut_at - state["down"]])
                    with self.lock:
                        self.cuts_done += 1
                    break
                state["down"] += len(data)
                client.sendall(data)
        except OSError:
            pass
        self._close(client, upstream)

    @staticmethod
    def _close(*connections) -> None:
        for connection in connections:
            try:
                connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            connection.close()

    def close(self) -> None:
        self.closed = True
        self.server.close()


def bulky(x):
    import time

    time.sleep(0.005)
    return x, b"r" * 3000


def test_a_results_stream_cut_mid_frame_replays_without_loss_or_repeat(agents, monkeypatch):
    nodes = agents(2)
    proxy = CuttingProxy(nodes[0].port, cuts=[5000, 12345, 777, 40000, 2222])
    try:
        monkeypatch.setenv("BURLA_NODES", f"http://127.0.0.1:{proxy.port},{nodes[1].url}")
        results = list(remote_parallel_map(bulky, list(range(400)), spinner=False, generator=True, backend="nodes"))
    finally:
        proxy.close()
    counts = collections.Counter(value for value, _ in results)
    assert_exactly_once(counts, list(range(400)))
    assert all(payload == b"r" * 3000 for _, payload in results)
    assert proxy.cuts_done >= 3, f"only {proxy.cuts_done} streams were cut; the test did not test much"


def test_killing_a_worker_process_on_a_node_loses_nothing(agents, tmp_path, capsys):
    agents(2)
    marker = tmp_path / "worker.pid"

    def kill_the_worker():
        deadline = time.monotonic() + 60  # however long the job takes to start on a busy machine
        while not marker.exists() and time.monotonic() < deadline:
            time.sleep(0.005)
        os.kill(int(marker.read_text()), signal.SIGKILL)

    threading.Thread(target=kill_the_worker, daemon=True).start()
    counts = collections.Counter(
        remote_parallel_map(
            slow_identity, [(x, str(tmp_path)) for x in range(INPUTS)], spinner=False, generator=True, backend="nodes"
        )
    )
    assert_exactly_once(counts, list(range(INPUTS)))
    assert "retrying it once on a new worker" in capsys.readouterr().err


def test_restarting_a_node_agent_at_the_same_address_mid_job(agents, capsys):
    nodes = agents(2)
    old_pid = nodes[0].pid
    counts, _ = run_counting(list(range(INPUTS)), nodes[0].restart, at=0.4)
    assert_exactly_once(counts, list(range(INPUTS)))
    assert nodes[0].pid != old_pid and nodes[0].alive()
    err = capsys.readouterr().err
    assert "re-sending" in err or "was lost" in err
