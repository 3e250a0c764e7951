"""The controller's work queue: each key queued once, one worker per key, at most one pending delay per key."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Hashable

import pytest

from graft.operator.workqueue import WorkQueue

pytestmark = pytest.mark.unit


def wait(cond: object, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():  # type: ignore[operator]
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_a_key_added_many_times_before_it_runs_runs_once() -> None:
    runs: Counter[Hashable] = Counter()
    q = WorkQueue(lambda k: runs.update([k]) and None, workers=2)
    for _ in range(50):
        q.add("a")
    q.start()
    wait(lambda: runs["a"] == 1 and len(q) == 0)
    time.sleep(0.1)
    q.stop()
    assert runs["a"] == 1


def test_an_event_while_a_key_runs_runs_it_once_more_afterwards_never_concurrently() -> None:
    started, release = threading.Event(), threading.Event()
    active, most, runs = [0], [0], Counter[Hashable]()

    def process(key: Hashable) -> None:
        active[0] += 1
        most[0] = max(most[0], active[0])
        runs.update([key])
        started.set()
        release.wait(2)
        active[0] -= 1

    q = WorkQueue(process, workers=4)
    q.start()
    q.add("a")
    started.wait(2)
    for _ in range(10):
        q.add("a")
    release.set()
    wait(lambda: runs["a"] == 2)
    time.sleep(0.1)
    q.stop()
    assert runs["a"] == 2 and most[0] == 1


def test_a_key_has_one_pending_delay_and_the_earliest_wins() -> None:
    runs: Counter[Hashable] = Counter()
    q = WorkQueue(lambda k: runs.update([k]) and None, workers=1)
    for delay in (30, 20, 10, 0.05, 5):
        q.add_after("a", delay)
    assert len(q) == 1
    q.start()
    wait(lambda: runs["a"] == 1)
    assert len(q) == 0  # the later delays were superseded, nothing left pending
    q.stop()


def test_a_failing_reconcile_retried_after_a_delay_does_not_multiply() -> None:
    runs: Counter[Hashable] = Counter()

    def process(key: Hashable) -> float:
        runs.update([key])
        return 0.05  # "retry in 50 ms"

    q = WorkQueue(process, workers=2)
    q.start()
    q.add("a")
    time.sleep(0.2)
    for _ in range(20):  # resyncs and events meanwhile
        q.add("a")
        time.sleep(0.01)
    time.sleep(0.3)
    q.stop()
    assert runs["a"] < 40  # about one run per 50 ms (plus the events), not a growing storm
