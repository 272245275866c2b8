"""Jobs on one node agent: replayable event streams, acknowledgements, back-pressure, slot
sharing between jobs, func_cpu, cancelation."""

from __future__ import annotations

import json
import time

from burla_core.serialization import dumps

from .node_helpers import Http, read_events, result_indices


def shout(x):
    print(f"line {x}")
    return x * 10


def nap(seconds, padding=None):
    import time

    time.sleep(seconds)
    return seconds


def status_of(http: Http, job_id: str) -> dict:
    status, _, body = http.request("GET", f"/v1/jobs/{job_id}")
    assert status == 200, body
    return json.loads(body)


def test_a_dropped_stream_replays_from_the_last_frame_the_caller_has(node_http, agent, node_token):
    http = node_http
    assert http.create_job("replay", shout)[0] == 201
    for batch_id in range(10):
        items = [(index, dumps((index,))) for index in range(batch_id * 10, batch_id * 10 + 10)]
        assert http.post_batch("replay", batch_id, items)[0] == 202
    # Wait until everything ran, so that the stream has many frames to give.
    deadline = time.monotonic() + 20
    while status_of(http, "replay")["done"] < 100 and time.monotonic() < deadline:
        time.sleep(0.05)
    everything = read_events(agent.url, node_token, "replay", until=lambda f: len(result_indices(f)) >= 100)
    assert sorted(result_indices(everything)) == list(range(100))
    # Cut the stream in the middle of a frame, again and again, resuming from what arrived.
    received: list[list] = []
    after = 0
    last_seq = everything[-1][0]
    for cut in (37, 211, 1500, 4000):
        frames = read_events(
            agent.url, node_token, "replay", after=after, cut_after_bytes=cut,
            until=lambda f: bool(f) and f[-1][0] >= last_seq,
        )
        received.extend(frames)
        if frames:
            after = frames[-1][0]
    if after < last_seq:
        received.extend(read_events(agent.url, node_token, "replay", after=after, until=lambda f: bool(f) and f[-1][0] >= last_seq))
    seqs = [frame[0] for frame in received]
    assert seqs == list(range(1, len(seqs) + 1)), f"frames must arrive once each, in order: {seqs}"
    assert sorted(result_indices(received)) == list(range(100)), "every result exactly once"
    lines = [entry[2] for _, kind, data in received if kind == "logs" for entry in data]
    assert sorted(lines) == sorted(f"line {i}\n" for i in range(100))
    assert http.request("DELETE", "/v1/jobs/replay")[0] == 200


def test_acknowledged_frames_are_dropped_from_the_node(node_http, agent, node_token):
    http = node_http
    assert http.create_job("acks", shout)[0] == 201
    assert http.post_batch("acks", 0, [(i, dumps((i,))) for i in range(20)])[0] == 202
    frames = read_events(agent.url, node_token, "acks", until=lambda f: len(result_indices(f)) >= 20)
    last = frames[-1][0]
    assert status_of(http, "acks")["unacked_bytes"] > 0
    assert http.request("POST", f"/v1/jobs/acks/ack?seq={last}")[0] == 200
    status = status_of(http, "acks")
    assert status["acked"] == last and status["unacked_bytes"] == 0
    # A stream from before the acknowledged frame has nothing to replay but new events.
    assert read_events(agent.url, node_token, "acks", after=last, timeout=1.5) == []
    assert http.request("DELETE", "/v1/jobs/acks")[0] == 200


def test_a_repeated_batch_upload_runs_once(node_http, agent, node_token):
    http = node_http
    assert http.create_job("repeat", shout)[0] == 201
    items = [(i, dumps((i,))) for i in range(5)]
    assert http.post_batch("repeat", 7, items)[0] == 202
    status, _, body = http.post_batch("repeat", 7, items)
    assert status == 200 and json.loads(body)["duplicate"] is True
    frames = read_events(agent.url, node_token, "repeat", until=lambda f: len(result_indices(f)) >= 5)
    time.sleep(0.3)
    assert status_of(http, "repeat")["done"] == 5
    assert sorted(result_indices(frames)) == list(range(5))
    assert http.request("DELETE", "/v1/jobs/repeat")[0] == 200


def test_uploads_are_back_pressured_when_the_node_holds_too_many_input_bytes(make_agent, node_token):
    agent = make_agent("--max-pending-mb", "1", "--upload-hold", "0.3")
    http = Http(agent.url, node_token)
    assert http.create_job("pressure", nap, slots=1)[0] == 201
    assert http.post_batch("pressure", 0, [(0, dumps((0.4,)))])[0] == 202  # runs
    assert http.post_batch("pressure", 1, [(1, dumps((0.01,))), (2, dumps((0.01,)))])[0] == 202  # queued
    # A third batch of 1.1 MB would take the node over 1 MB of queued inputs: told to come back.
    padding = b"x" * 1_100_000
    from burla_core.node.frames import encode_batch

    body = b"".join(encode_batch(2, [(3, dumps((0.01, padding)))]))
    started = time.monotonic()
    status, headers, answer = http.request("POST", "/v1/jobs/pressure/batches", body)
    assert status == 429, answer
    assert headers.get("Retry-After") and time.monotonic() - started >= 0.25
    # Once the queue drains there is room again.
    deadline = time.monotonic() + 10
    while status_of(http, "pressure")["queued_inputs"] and time.monotonic() < deadline:
        time.sleep(0.05)
    status, _, answer = http.request("POST", "/v1/jobs/pressure/batches", body)
    assert status == 202, answer
    assert http.request("DELETE", "/v1/jobs/pressure")[0] == 200


def test_several_jobs_share_a_node_never_running_more_calls_than_fit(make_agent, node_token):
    agent = make_agent("--cpus", "2")
    http = Http(agent.url, node_token)
    for job_id in ("first", "second", "third"):
        assert http.create_job(job_id, nap, slots=2)[0] == 201
    for batch_id in range(3):
        assert http.post_batch("third", batch_id, [(batch_id, dumps((0.6,)))])[0] == 202
    for batch_id in range(4):  # one input per batch: each batch is one call
        assert http.post_batch("first", batch_id, [(batch_id, dumps((0.6,)))])[0] == 202
    time.sleep(0.2)
    for batch_id in range(3):
        assert http.post_batch("second", batch_id, [(batch_id, dumps((0.3,)))])[0] == 202
    most_running = 0
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        health = json.loads(http.request("GET", "/v1/health")[2])
        first, second, third = (status_of(http, job_id) for job_id in ("first", "second", "third"))
        most_running = max(most_running, health["running_calls"], first["running"] + second["running"] + third["running"])
        if second["done"] == 3:
            break
        time.sleep(0.02)
    assert second["done"] == 3, f"the second job did not finish: {second}"
    assert first["done"] < 4, "the second job should take turns with the first, not wait for it to finish"
    assert most_running <= 2, f"{most_running} calls ran at once on a node with room for 2"
    for job_id in ("first", "second", "third"):
        assert http.request("DELETE", f"/v1/jobs/{job_id}")[0] == 200


def test_func_cpu_and_func_ram_decide_a_jobs_slots(make_agent, node_token):
    agent = make_agent("--cpus", "4", "--ram-gb", "8")
    http = Http(agent.url, node_token)
    assert http.create_job("wide", nap, slots=4, func_cpu=2)[0] == 201
    assert status_of(http, "wide")["slots"] == 2  # at most 2 of its calls fit in 4 CPUs
    assert http.create_job("heavy", nap, slots=4, func_ram=8)[0] == 201
    assert status_of(http, "heavy")["slots"] == 1
    status, _, body = http.create_job("too-big", nap, slots=1, func_cpu=8)
    assert status == 409 and b"func_cpu=8" in body
    for job_id in ("wide", "heavy"):
        assert http.request("DELETE", f"/v1/jobs/{job_id}")[0] == 200


def test_cancel_stops_running_calls_within_two_seconds(node_http, agent, node_token):
    http = node_http
    assert http.create_job("long", nap, slots=2)[0] == 201
    assert http.post_batch("long", 0, [(i, dumps((30,))) for i in range(4)])[0] == 202
    time.sleep(0.5)
    started = time.monotonic()
    status, _, body = http.request("POST", "/v1/jobs/long/cancel")
    elapsed = time.monotonic() - started
    assert status == 200 and json.loads(body)["stopped"] is True, body
    assert elapsed < 2.0, f"cancel took {elapsed:.2f} s"
    assert status_of(http, "long")["state"] in ("canceled", "stopped")
    status, _, body = http.post_batch("long", 1, [(9, dumps((1,)))])
    assert status == 409 and b"canceled" in body
    assert http.request("DELETE", "/v1/jobs/long")[0] == 200


def test_a_job_whose_caller_went_silent_is_canceled_after_its_lease(make_agent, node_token):
    agent = make_agent("--job-lease", "1")
    http = Http(agent.url, node_token)
    assert http.create_job("abandoned", nap, slots=1)[0] == 201
    assert http.post_batch("abandoned", 0, [(0, dumps((30,)))])[0] == 202
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        jobs = json.loads(http.request("GET", "/v1/jobs")[2])["jobs"]
        if not jobs:
            break
        time.sleep(0.2)
    assert not jobs, f"the abandoned job is still there: {jobs}"
    assert "canceling it" in agent.log()
