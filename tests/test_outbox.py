"""The worker's Outbox: what the main thread adds reaches the pool, in order, and the sender
thread is woken only when it sleeps: while results flow it stays awake, and it goes to sleep
when they stop or when the main thread holds the GIL (a call computing in Python)."""

import threading
import time

import multiprocess
import pytest

from burla_core.worker import AWAKE_SECONDS, Outbox, unpack


def _collector(connection):
    got: list = []

    def read() -> None:
        while True:
            try:
                got.extend(unpack(connection.recv_bytes()))
            except (EOFError, OSError):
                return

    threading.Thread(target=read, daemon=True).start()
    return got


@pytest.fixture
def outbox_and_received():
    """An Outbox on a real pipe, and the list of items the other end has received so far."""
    ours, theirs = multiprocess.Pipe()
    return Outbox(theirs), _collector(ours)


def _wait_for(got: list, count: int, seconds: float = 5.0) -> None:
    deadline = time.monotonic() + seconds
    while len(got) < count and time.monotonic() < deadline:
        time.sleep(0.005)


def test_results_flowing_keep_the_sender_awake_and_arrive_in_order(outbox_and_received):
    outbox, got = outbox_and_received
    for index in range(40):
        outbox.add(["r", 1, index, b"x"])
        time.sleep(0.004)  # a call that sleeps: the sender's ticks come on time
    _wait_for(got, 40)
    assert [item[2] for item in got] == list(range(40))
    # One wake-up to start, and a few more at most where this machine was slow; woken at
    # every add, it would be 40.
    assert outbox.wakeups <= 8, outbox.wakeups


def test_the_sender_sleeps_when_items_stop_and_wakes_for_the_next(outbox_and_received):
    outbox, got = outbox_and_received
    outbox.add(["r", 1, 0, b"x"])
    _wait_for(got, 1)
    time.sleep(AWAKE_SECONDS * 10)
    before = outbox.wakeups
    outbox.add(["r", 1, 1, b"y"])  # no flush: the woken sender sends it
    _wait_for(got, 2)
    assert [item[2] for item in got] == [0, 1]
    assert outbox.wakeups == before + 1


def test_a_call_computing_in_python_sends_the_sender_to_sleep(outbox_and_received):
    outbox, got = outbox_and_received
    for index in range(5):
        outbox.add(["r", 1, index, b"x"])
        deadline = time.monotonic() + 0.03
        while time.monotonic() < deadline:  # holds the GIL, as a function computing does
            pass
    _wait_for(got, 5)
    assert [item[2] for item in got] == list(range(5))
    # Awake, its ticks would each force the GIL from this thread: it sleeps instead, and each
    # add wakes it.
    assert outbox.wakeups >= 4, outbox.wakeups
