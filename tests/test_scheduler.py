"""The default scheduler against the in-memory cluster (burla_core.memory): nodes that join a
running job, nodes that are lost or leave, max_parallelism across them, a slow node, and a node
that keeps talking after it was declared lost. Every test checks that each input's result
arrives exactly once."""

from __future__ import annotations

import collections
import threading
import time

import pytest

from burla import remote_parallel_map
from burla_core import plugins
from burla_core.errors import NodeDisconnected, NodesFailedToBoot
from burla_core.memory import MemoryCluster, MemoryNode
from burla_core.scheduler import DefaultScheduler
from burla_core.memory import MemoryProvisioner, MemoryTransport
from burla_core.serialization import dumps_function, load_result
from burla_core.types import NODE_LOST, RESULTS, JobSpec, ResourceRequest


def slow_square(x):
    time.sleep(0.05)
    return x * x


def square(x):
    return x * x


@pytest.fixture
def backend(monkeypatch):
    """Registers an in-memory backend named "memory" on a cluster the test builds."""
    made = []

    def install(cluster: MemoryCluster) -> str:
        registry = plugins.load_registry(extra_plugins=(cluster.plugin("memory"),))
        monkeypatch.setattr(plugins, "_registry", registry)
        made.append(cluster)
        return "memory"

    yield install
    plugins.reset_registry()


def run_job(cluster: MemoryCluster, function, inputs, **job_fields):
    """The scheduler alone, as the core drives it: (results by index, events seen)."""
    job = JobSpec("job1", dumps_function(function), function.__name__, ResourceRequest(func_ram=1), **job_fields)
    results: dict[int, list] = collections.defaultdict(list)
    kinds = collections.Counter()
    for event in DefaultScheduler().run(job, enumerate(inputs), len(inputs), MemoryProvisioner(cluster), MemoryTransport(cluster)):
        kinds[event[0]] += 1
        if event[0] == RESULTS:
            for index, payload in event[2]:
                results[index].append(load_result(index, payload))
    return results, kinds


def assert_exactly_once(results: dict, inputs: list, function) -> None:
    twice = {index: values for index, values in results.items() if len(values) > 1}
    missing = sorted(set(range(len(inputs))) - set(results))
    assert not twice, f"results delivered more than once: {twice}"
    assert not missing, f"results never delivered: {missing[:20]} ({len(missing)} in all)"
    wrong = {index: values[0] for index, values in results.items() if values[0] != function(inputs[index])}
    assert not wrong, f"wrong results: {wrong}"


def test_a_node_that_joins_mid_job_takes_work_at_once():
    first = MemoryNode("first", slots=1, delay=0.02)
    cluster = MemoryCluster([first])
    joined = MemoryNode("joined", slots=3)
    threading.Timer(0.2, cluster.add_node, args=(joined,)).start()
    inputs = list(range(200))
    results, _ = run_job(cluster, square, inputs)
    assert_exactly_once(results, inputs, square)
    assert joined.ran, "the node that joined mid-job ran nothing"
    assert len(joined.ran) > len(first.ran), (
        f"the joined node (3 slots) should take most of the remaining work: it ran {len(joined.ran)}, "
        f"the first node (1 slot) {len(first.ran)}"
    )


def test_grow_starts_on_the_first_node_before_the_others_boot():
    ready = MemoryNode("ready", slots=1, delay=0.01)
    late = [MemoryNode(f"boot{i}", slots=2, delay=0.01, boot_seconds=0.3 + 0.2 * i) for i in range(3)]
    cluster = MemoryCluster([ready], bootable=late)
    started = time.monotonic()
    first_result_at = None
    job = JobSpec("grow", dumps_function(square), "square", ResourceRequest(func_ram=1), grow=True)
    seen = collections.Counter()
    for event in DefaultScheduler().run(job, enumerate(range(300)), 300, MemoryProvisioner(cluster), MemoryTransport(cluster)):
        if event[0] == RESULTS:
            first_result_at = first_result_at or time.monotonic() - started
            for index, _ in event[2]:
                seen[index] += 1
    assert first_result_at is not None and first_result_at < 0.3, f"the first result took {first_result_at} s: grow delayed the job"
    assert sorted(seen) == list(range(300)) and set(seen.values()) == {1}
    assert all(node.ran for node in late), f"booted nodes that ran nothing: {[n.node_id for n in late if not n.ran]}"


def test_grow_from_zero_nodes_waits_for_the_first_one_to_join():
    booting = MemoryNode("boot0", slots=2, boot_seconds=0.3)
    cluster = MemoryCluster([], bootable=[booting])
    inputs = list(range(20))
    results, _ = run_job(cluster, square, inputs, grow=True)
    assert_exactly_once(results, inputs, square)
    assert sorted(booting.ran) == inputs


def test_the_transport_prepares_the_job_while_its_first_node_boots():
    booting = MemoryNode("boot0", slots=2, boot_seconds=1.5)
    cluster = MemoryCluster([], bootable=[booting])
    seen: dict[str, float] = {}

    class Preparing(MemoryTransport):
        def prepare(self, job):
            time.sleep(0.2)  # what the http transport spends describing the caller's environment
            seen["prepared"] = time.monotonic()

        def open_session(self, node, job, slots, events):
            seen["opened"] = time.monotonic()
            return super().open_session(node, job, slots, events)

    job = JobSpec("prep", dumps_function(square), "square", ResourceRequest(func_ram=1), grow=True)
    started = time.monotonic()
    seen_results = collections.Counter()
    for event in DefaultScheduler().run(job, enumerate(range(10)), 10, MemoryProvisioner(cluster), Preparing(cluster)):
        if event[0] == RESULTS:
            seen_results.update(index for index, _ in event[2])
    assert sorted(seen_results) == list(range(10)) and set(seen_results.values()) == {1}
    assert seen["prepared"] < seen["opened"], "the transport prepared the job only once its first node had joined"
    assert seen["opened"] - started >= 1.4, "the node joined before its boot ended: the test proves nothing"


def test_grow_that_boots_nothing_fails_with_the_reasons():
    cluster = MemoryCluster([], bootable=[MemoryNode("vm1", slots=2, boot_failure="QUOTA_EXCEEDED: CPUS in us-central1")])
    with pytest.raises(NodesFailedToBoot, match="vm1: QUOTA_EXCEEDED"):
        run_job(cluster, square, [1, 2, 3], grow=True)


def test_growth_that_ended_before_the_job_started_still_fails_with_the_reasons(monkeypatch):
    # Every boot can fail before the scheduler has looked (a quota error comes back at once):
    # that is still NodesFailedToBoot with the reasons, not "call with grow=True".
    def fail_at_once(self, job, nodes, membership):
        membership.growth_ended(["vm1: QUOTA_EXCEEDED: CPUS in us-central1"])

    monkeypatch.setattr(MemoryProvisioner, "watch_job", fail_at_once)
    with pytest.raises(NodesFailedToBoot, match="vm1: QUOTA_EXCEEDED"):
        run_job(MemoryCluster([], bootable=[MemoryNode("vm1", slots=2)]), square, [1, 2, 3], grow=True)


def test_a_failed_boot_is_reported_and_the_job_goes_on_with_the_others(capsys):
    ok = MemoryNode("ok", slots=2, boot_seconds=0.1)
    bad = MemoryNode("bad", slots=2, boot_seconds=0.05, boot_failure="ZONE_RESOURCE_POOL_EXHAUSTED")
    cluster = MemoryCluster([], bootable=[bad, ok])
    inputs = list(range(30))
    job = JobSpec("grow", dumps_function(square), "square", ResourceRequest(func_ram=1), grow=True)
    notices, seen = [], collections.Counter()
    for event in DefaultScheduler().run(job, enumerate(inputs), len(inputs), MemoryProvisioner(cluster), MemoryTransport(cluster)):
        if event[0] == RESULTS:
            seen.update(index for index, _ in event[2])
        elif event[0] == "notice":
            notices.append(event[2])
    assert sorted(seen) == inputs and set(seen.values()) == {1}
    assert any("ZONE_RESOURCE_POOL_EXHAUSTED" in text for text in notices), notices


def test_a_lost_node_s_unfinished_inputs_run_elsewhere_exactly_once():
    doomed = MemoryNode("doomed", slots=2, delay=0.02)
    steady = MemoryNode("steady", slots=2, delay=0.02)
    cluster = MemoryCluster([doomed, steady])
    threading.Timer(0.15, doomed.lose, args=("pulled the plug",)).start()
    inputs = list(range(100))
    results, kinds = run_job(cluster, square, inputs)
    assert_exactly_once(results, inputs, square)
    assert doomed.ran and steady.ran


def test_a_node_the_provisioner_says_left_is_treated_as_lost():
    leaving = MemoryNode("leaving", slots=2, delay=0.02)
    staying = MemoryNode("staying", slots=2, delay=0.02)
    cluster = MemoryCluster([leaving, staying])

    def leave():
        leaving.pause()  # it stops answering (a deleted VM) and the provisioner says so
        cluster.remove_node("leaving", "VM deleted")

    threading.Timer(0.15, leave).start()
    inputs = list(range(80))
    results, _ = run_job(cluster, square, inputs)
    leaving.resume()
    assert_exactly_once(results, inputs, square)


def test_events_from_a_node_after_it_was_declared_lost_are_dropped():
    chatty = MemoryNode("chatty", slots=2, delay=0.02, talk_after_lost=True)
    other = MemoryNode("other", slots=2, delay=0.02)
    cluster = MemoryCluster([chatty, other])
    threading.Timer(0.1, chatty.lose, args=("declared lost",)).start()
    inputs = list(range(80))
    results, kinds = run_job(cluster, square, inputs)
    # chatty kept running and sending results after NODE_LOST: none of them may count twice.
    assert_exactly_once(results, inputs, square)
    assert kinds[NODE_LOST] == 0, "NODE_LOST is the scheduler's business; it is not passed to the caller"


def test_every_node_lost_is_node_disconnected():
    only = MemoryNode("only", slots=1, delay=0.05)
    cluster = MemoryCluster([only])
    threading.Timer(0.1, only.lose, args=("gone",)).start()
    with pytest.raises(NodeDisconnected, match="only: gone"):
        run_job(cluster, square, list(range(50)))


def test_max_parallelism_holds_across_nodes_that_join():
    nodes = [MemoryNode("a", slots=2, delay=0.03)]
    cluster = MemoryCluster(nodes)
    joiners = [MemoryNode(f"j{i}", slots=4, delay=0.03) for i in range(3)]
    for number, node in enumerate(joiners):
        threading.Timer(0.05 + 0.05 * number, cluster.add_node, args=(node,)).start()
    running = {"now": 0, "peak": 0}
    lock = threading.Lock()

    def counted(function, args):
        with lock:
            running["now"] += 1
            running["peak"] = max(running["peak"], running["now"])
        try:
            time.sleep(0.03)
            return function(*args)
        finally:
            with lock:
                running["now"] -= 1

    for node in nodes + joiners:
        node.handler = counted
    inputs = list(range(120))
    results, _ = run_job(cluster, square, inputs, max_parallelism=5)
    assert_exactly_once(results, inputs, square)
    assert running["peak"] <= 5, f"{running['peak']} calls ran at once with max_parallelism=5"
    assert running["peak"] == 5, f"max_parallelism=5 should be reached once nodes joined (peak {running['peak']})"


def test_a_slow_node_gets_less_work_and_never_holds_up_the_end_for_long():
    slow = MemoryNode("slow", slots=1, delay=0.2)
    fast = MemoryNode("fast", slots=1, delay=0.002)
    cluster = MemoryCluster([slow, fast])
    inputs = list(range(200))
    started = time.monotonic()
    results, _ = run_job(cluster, square, inputs)
    elapsed = time.monotonic() - started
    assert_exactly_once(results, inputs, square)
    assert len(fast.ran) > 5 * len(slow.ran), f"fast ran {len(fast.ran)}, slow {len(slow.ran)}"
    # Guided batches shrink at the end: the slow node holds at most a few inputs when the rest is done.
    assert elapsed < 3.0, f"the job took {elapsed:.1f} s; the slow node held up the end"


def test_batches_waiting_on_a_node_behind_others_do_not_make_its_batches_shrink(monkeypatch):
    # A node holds a read-ahead batch per slot: the time one waits there is not the node's pace.
    from burla_core.memory import MemorySession

    sizes: list[int] = []
    submit = MemorySession.submit
    monkeypatch.setattr(MemorySession, "submit", lambda self, batch: (sizes.append(len(batch.items)), submit(self, batch))[1])
    # A quarter of the usual longest batch, so that batches run up to 0.25 s and wait as long
    # again behind the one ahead of them.
    cluster = MemoryCluster([MemoryNode("steady", slots=2, delay=0.006, max_batch_seconds=0.25)])
    inputs = list(range(400))
    results, _ = run_job(cluster, square, inputs)
    assert_exactly_once(results, inputs, square)
    peak = sizes.index(max(sizes))
    regrown = [(before, after) for before, after in zip(sizes[peak:], sizes[peak + 1:]) if after > before + 1]
    # Guided self-scheduling only shrinks batches after the largest; a shrink for the time a batch
    # waited behind others, then growth again (73, 64, 11, 11, 12, 22, ...), is the defect.
    assert not regrown, f"batch sizes shrank and grew again on a steady node: {sizes}"


def _batch_sizes(monkeypatch, node: MemoryNode, count: int) -> list[int]:
    from burla_core.memory import MemorySession

    sizes: list[int] = []
    submit = MemorySession.submit
    inputs = list(range(count))
    with monkeypatch.context() as patch:  # undone before the next call measures its own
        patch.setattr(MemorySession, "submit", lambda self, batch: (sizes.append(len(batch.items)), submit(self, batch))[1])
        results, _ = run_job(MemoryCluster([node]), square, inputs)
    assert_exactly_once(results, inputs, square)
    return sizes


def test_a_node_s_min_batch_seconds_keeps_the_end_of_a_job_from_shrinking_to_single_inputs(monkeypatch):
    # An engine's task costs a round trip of its own: the guided end of a job (batches of 3, 2,
    # 1, 1, ...) would pay it per input. Its session asks for batches of at least 0.1 s.
    plain = _batch_sizes(monkeypatch, MemoryNode("plain", slots=1, delay=0.005), 300)
    assert min(plain) <= 2, f"without a minimum the end of the job should come in single inputs: {plain}"
    floored = _batch_sizes(monkeypatch, MemoryNode("engine", slots=1, delay=0.005, min_batch_seconds=0.1), 300)
    # The first two go out before the node has shown its pace; the last holds what is left.
    assert min(floored[2:-1]) >= 8, f"batches fell below 0.1 s of calls (about 16 inputs of 5 ms): {floored}"
    assert len(floored) < len(plain), f"with the minimum there should be fewer batches: {floored} vs {plain}"


def test_a_steady_node_s_batches_grow_up_to_its_max_batch_seconds_and_stay_there(monkeypatch):
    # Doubling past the mark (46, 92 inputs of 2 ms against 0.1 s) used to collapse the next
    # ones to a quarter of it and grow them again: 11, 22, 44, 88, 11, 22, ... all job long.
    sizes = _batch_sizes(monkeypatch, MemoryNode("steady", slots=1, delay=0.002, max_batch_seconds=0.1), 1000)
    peak = sizes.index(max(sizes))
    # A few inputs up and down follow the node's timing; growing by half again means a collapse.
    regrown = [(before, after) for before, after in zip(sizes[peak:], sizes[peak + 1:]) if after > 1.5 * before]
    assert not regrown, f"batch sizes shrank and grew again on a steady node: {sizes}"
    assert max(sizes) < 2 * 0.1 / 0.002, f"batches grew past twice what fits in 0.1 s: {sizes}"


def test_a_node_s_batch_growth_says_how_fast_its_batches_grow(monkeypatch):
    # Two batches go out before the node has shown its pace (18 of 600 on one slot); the next
    # is batch_growth times as big, where that fits in max_batch_seconds (72 x 2 ms does).
    doubling = _batch_sizes(monkeypatch, MemoryNode("plain", slots=1, delay=0.002), 600)
    quadrupling = _batch_sizes(monkeypatch, MemoryNode("engine", slots=1, delay=0.002, batch_growth=4), 600)
    assert doubling[:3] == [18, 18, 36], doubling
    assert quadrupling[:3] == [18, 18, 72], quadrupling


def test_a_node_s_batch_split_cuts_the_remaining_work_into_fewer_larger_batches(monkeypatch):
    # Guided self-scheduling: each batch holds remaining / (batch_split x slots). An engine's
    # session halves the remaining work per slot instead of quartering it: fewer tasks to start.
    quarters = _batch_sizes(monkeypatch, MemoryNode("plain", slots=2, delay=0.002), 600)
    halves = _batch_sizes(monkeypatch, MemoryNode("engine", slots=2, delay=0.002, batch_split=2), 600)
    assert sum(quarters) == sum(halves) == 600
    assert max(halves) > max(quarters), f"halves should make larger batches: {halves} vs {quarters}"
    assert len(halves) < len(quarters), f"halves should make fewer batches: {halves} vs {quarters}"


def test_the_whole_api_on_an_in_memory_backend(backend):
    name = backend(MemoryCluster([MemoryNode("m1", slots=2), MemoryNode("m2", slots=2)]))
    assert remote_parallel_map(square, range(50), backend=name, spinner=False) == [x * x for x in range(50)]
    assert sorted(remote_parallel_map(square, [3, 4], backend=name, generator=True, spinner=False)) == [9, 16]


def test_raise_errors_false_returns_each_failure_in_place(backend):
    def fails_on_odd(x):
        if x % 2:
            raise ValueError(f"odd {x}")
        return x

    name = backend(MemoryCluster([MemoryNode("m1", slots=2)]))
    results = remote_parallel_map(fails_on_odd, range(6), backend=name, spinner=False, raise_errors=False)
    assert results[0::2] == [0, 2, 4]
    for index in (1, 3, 5):
        assert isinstance(results[index], ValueError) and str(results[index]) == f"odd {index}", results[index]
        assert results[index].burla_input_index == index
    streamed = list(remote_parallel_map(fails_on_odd, range(4), backend=name, generator=True, spinner=False, raise_errors=False))
    assert sorted(r for r in streamed if not isinstance(r, Exception)) == [0, 2]
    assert sorted(str(r) for r in streamed if isinstance(r, Exception)) == ["odd 1", "odd 3"]


def test_a_node_s_even_tail_ends_each_slot_with_one_batch(monkeypatch):
    # Guided self-scheduling ends a job in shrinking batches (68, 34, 17, 9, 7 on 2 slots), each
    # an engine task of its own. A session with even_tail gets, once its pace is known, what
    # keeps each slot busy until the whole job can end: one last batch per slot.
    guided = _batch_sizes(monkeypatch, MemoryNode("guided", slots=2, delay=0.005, batch_split=1), 600)
    even = _batch_sizes(monkeypatch, MemoryNode("even", slots=2, delay=0.005, batch_split=1, even_tail=True), 600)
    assert sum(guided) == sum(even) == 600

    def tail(sizes):  # the batches after the largest ones
        return [size for size in sizes[sizes.index(max(sizes)):] if size < 0.8 * max(sizes)]

    assert len(tail(guided)) > 2, f"the guided end should take several shrinking batches: {guided}"
    assert len(tail(even)) <= 2, f"with even_tail each of the 2 slots should end with one batch: {even}"


def test_the_even_level_spreads_the_inputs_left_so_that_every_slot_runs_dry_at_once():
    from burla_core.nodework import even_level

    assert even_level([(0.0, 1.0), (0.0, 1.0)], 10) == 5.0
    assert even_level([(2.0, 1.0), (0.0, 1.0)], 4) == 3.0  # 3 inputs to the free slot, 1 to the other
    assert even_level([(8.0, 1.0), (0.0, 1.0)], 4) == 4.0  # a slot busy past the level gets none
    assert even_level([(0.0, 0.5), (0.0, 1.0)], 6) == 2.0  # a slot twice as fast takes twice as many
