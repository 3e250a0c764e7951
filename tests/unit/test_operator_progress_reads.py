"""Progress read off the reconcile path: a slow store never holds a reconcile."""

from __future__ import annotations

import threading
from collections.abc import Hashable, Iterator

import pytest

from graft.api.status import Progress
from graft.operator.progress_reads import ProgressReads
from tests.integration.helpers import wait_for

pytestmark = pytest.mark.unit

SNAPSHOT = Progress(trials="1/4 (2 running)", trials_total=4, trials_running=2, trials_completed=1)


class SlowStore:
    """A storage read that waits until the test lets it answer, counting reads."""

    def __init__(self, answer: Progress | None = SNAPSHOT) -> None:
        self.answer, self.reads, self.release = answer, 0, threading.Event()

    def read(self, uri: str) -> Progress | None:
        self.reads += 1
        self.release.wait(timeout=30)
        return self.answer


@pytest.fixture
def store() -> Iterator[SlowStore]:
    s = SlowStore()
    yield s
    s.release.set()


def reads(store: SlowStore, changed: list[Hashable], interval: float = 60.0) -> ProgressReads:
    return ProgressReads(interval, changed.append, read=store.read)


def test_asking_for_progress_returns_at_once_while_the_store_is_slow(store: SlowStore) -> None:
    changed: list[Hashable] = []
    pr = reads(store, changed)

    assert pr.latest(("ns", "job"), "s3://b/p.json") is None  # the read is under way, not awaited
    assert wait_for(lambda: store.reads == 1, timeout=10, what="the background read to start")
    pr.stop()


def test_a_finished_read_queues_the_job_and_is_answered_from_memory(store: SlowStore) -> None:
    changed: list[Hashable] = []
    pr = reads(store, changed)
    pr.latest(("ns", "job"), "s3://b/p.json")
    store.release.set()

    wait_for(lambda: changed == [("ns", "job")], timeout=10, what="the job to be queued again")
    assert pr.latest(("ns", "job"), "s3://b/p.json") == SNAPSHOT
    assert store.reads == 1  # fresh: not read again within the interval
    pr.stop()


def test_one_read_at_a_time_per_job(store: SlowStore) -> None:
    pr = reads(store, [])
    for _ in range(5):
        pr.latest(("ns", "job"), "s3://b/p.json")
    wait_for(lambda: store.reads == 1, timeout=10, what="one read")
    store.release.set()
    wait_for(lambda: len(pr) == 1, timeout=10, what="the read to end")
    assert store.reads == 1
    pr.stop()


def test_a_stale_snapshot_is_read_again(store: SlowStore) -> None:
    changed: list[Hashable] = []
    store.release.set()
    pr = reads(store, changed, interval=0.0)
    pr.latest(("ns", "job"), "s3://b/p.json")
    wait_for(lambda: changed, timeout=10, what="the first read")
    pr.latest(("ns", "job"), "s3://b/p.json")
    wait_for(lambda: store.reads == 2, timeout=10, what="a second read")
    assert changed == [("ns", "job")]  # the same snapshot twice queues the job once
    pr.stop()


def test_a_job_forgotten_during_its_read_keeps_nothing(store: SlowStore) -> None:
    changed: list[Hashable] = []
    pr = reads(store, changed)
    pr.latest(("ns", "done"), "s3://b/p.json")
    wait_for(lambda: store.reads == 1, timeout=10, what="the read to start")
    pr.forget(("ns", "done"))
    store.release.set()

    pr.stop(wait=True)
    assert len(pr) == 0 and changed == []
