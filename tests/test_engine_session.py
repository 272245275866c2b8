"""The engine session every engine backend builds on (burla_core.engine.session), against a
recording engine: how many tasks it keeps launched, and what it does when one is lost."""

from __future__ import annotations

import queue

import pytest

from burla_core.engine.session import EngineSession, EngineTask
from burla_core.serialization import dumps_input
from burla_core.types import RESULTS, InputBatch


class RecordingSession(EngineSession):
    """Launches nothing anywhere: it records the tasks, and the test ends them."""

    def __init__(self, slots: int, read_ahead: int = 0) -> None:
        self.events = queue.SimpleQueue()
        super().__init__("engine-node", slots, self.events)
        self.read_ahead = read_ahead
        self.launched: list[EngineTask] = []
        self.stopped: list[EngineTask] = []

    def launch(self, task: EngineTask) -> None:
        self.launched.append(task)

    def stop(self, tasks: list[EngineTask]) -> None:
        self.stopped.extend(tasks)

    def finish(self, task: EngineTask) -> None:
        """The engine ran the task: a result per input, then its end."""
        self.deliver(task, [["r", index, b"result"] for index in list(task.items)])
        self.ended(task)


def _submit(session: EngineSession, batches: int) -> None:
    for batch in range(batches):
        session.submit(InputBatch(batch, [(batch, dumps_input(batch, batch))]))


def test_tasks_run_up_to_the_slots_and_the_next_is_launched_when_one_ends():
    session = RecordingSession(slots=2)
    _submit(session, 4)
    assert len(session.launched) == 2, "without read-ahead only `slots` tasks are on the engine"
    session.finish(session.launched[0])
    assert len(session.launched) == 3, "a task that ends makes room for the next batch"


def test_read_ahead_keeps_the_next_batches_queued_on_the_engine():
    # For an engine that runs at most `slots` at once itself and starts a queued task as soon as
    # a slot frees (Ray's raylet): no round trip to the caller between two batches of a slot.
    session = RecordingSession(slots=2, read_ahead=2)
    _submit(session, 5)
    assert len(session.launched) == 4, f"slots + read_ahead tasks should be launched, got {len(session.launched)}"
    for task in list(session.launched):
        session.finish(task)
    assert len(session.launched) == 5
    session.finish(session.launched[4])
    results = []
    while not session.events.empty():
        event = session.events.get()
        if event[0] == RESULTS:
            results += [index for index, _ in event[2]]
    assert sorted(results) == [0, 1, 2, 3, 4], f"each input's result exactly once: {results}"


def test_a_batch_the_session_does_not_read_ahead_waits_for_a_free_slot():
    # A Dask worker queues a second task behind its running one: the dask session reads ahead
    # only batches its pace says are short, so a long one never waits behind a busy worker.
    class ShortOnly(RecordingSession):
        def may_read_ahead(self, items):
            return len(items) <= 1

    session = ShortOnly(slots=1, read_ahead=1)
    session.submit(InputBatch(0, [(0, dumps_input(0, 0))]))
    session.submit(InputBatch(1, [(1, dumps_input(1, 1)), (2, dumps_input(2, 2))]))
    assert len(session.launched) == 1, "a two-input batch must not be read ahead"
    session.finish(session.launched[0])
    assert len(session.launched) == 2 and sorted(session.launched[1].items) == [1, 2]
    session.submit(InputBatch(2, [(3, dumps_input(3, 3))]))
    assert len(session.launched) == 3, "a one-input batch may be read ahead behind the running one"


def test_the_dask_session_reads_ahead_only_batches_its_pace_says_are_neither_short_nor_long():
    pytest.importorskip("distributed")
    from burla_backend_dask import transport

    session = transport.DaskSession.__new__(transport.DaskSession)
    session.pace = None
    # A machine of two single-thread workers; the session runs one task, on "a".
    session.workers, session.threads, session.worker_of = {"a": 1, "b": 1}, {"a": 1, "b": 1}, {"task-1": "a"}
    items = [(index, b"") for index in range(50)]
    assert not session.may_read_ahead(items), "before any batch has ended, nothing is known of the pace"
    shortest, longest = transport.READ_AHEAD_SECONDS
    session.pace = longest / 100
    assert session.may_read_ahead(items) and not session.may_read_ahead(items * 3)
    session.pace = shortest / 100
    assert not session.may_read_ahead(items), "a short batch (the end of a job) goes to whichever worker frees first"
    session.pace = longest / 100
    session.threads["a"] = 2
    assert not session.may_read_ahead(items), (
        "with a free thread on every worker, a task read ahead would run at once, beside the job's slots"
    )


def test_the_dask_session_reads_ahead_onto_the_worker_with_the_fewest_inputs_left():
    # The end of a job, seen at a defect: worker "a" has just ended a batch and holds one long
    # queued batch; "b" runs its last input with a short batch queued. The next batch read
    # ahead must queue behind "b" (79 inputs left), not "a" (156, though only one task):
    # behind "a", "b" ran dry 0.6 s before the job's end.
    pytest.importorskip("distributed")
    import threading

    from burla_backend_dask import transport

    session = transport.DaskSession.__new__(transport.DaskSession)
    session._lock = threading.RLock()
    session.slots = 2
    session.workers, session.threads = {"a": 1, "b": 1}, {"a": 1, "b": 1}
    tasks = {name: EngineTask(name, dict.fromkeys(range(size), b"")) for name, size in (("a1", 156), ("b1", 1), ("b2", 78), ("new", 39))}
    session._running = dict(tasks)
    session.worker_of = {"a1": "a", "b1": "b", "b2": "b"}
    assert session._free_worker(tasks["new"]) == "b"
    # With a free thread, a task goes where it runs at once, as without read-ahead.
    del session._running["b1"], session._running["b2"], session.worker_of["b1"], session.worker_of["b2"]
    assert session._free_worker(tasks["new"]) == "b"


def test_a_cancel_stops_the_queued_tasks_too():
    session = RecordingSession(slots=1, read_ahead=1)
    _submit(session, 3)
    session.cancel()
    assert session.stopped == session.launched and len(session.stopped) == 2, "the queued task must be stopped as well"


def test_a_finished_job_returns_while_its_tasks_are_only_ending():
    # Every input of a task has its result: the task runs none of the job's calls any more; its
    # end on the engine (5-10 ms) need not hold back the job's return. The session is let go of
    # once the engine says the task ended.
    class Releasing(RecordingSession):
        released = 0

        def release(self):
            self.released += 1

    session = Releasing(slots=1)
    _submit(session, 1)
    task = session.launched[0]
    assert not session.is_stopped(), "a task with an input still to run is running"
    session.deliver(task, [["r", 0, b"result"]])
    session.close()
    assert session.wait_stopped(0.0), "a task whose inputs all settled runs nothing of the job"
    assert session.released == 0 and not session.stopped, "an ending task is neither stopped nor released under"
    session.ended(task)
    assert session.released == 1, "the session is released once its last task has ended"
