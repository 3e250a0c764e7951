"""The driver's trial tracker (graft.jobs.tracker): what it records of trials, epochs, early stops,
failures and recoveries, what it persists to graft_progress.json, and how a later attempt continues
that record. Tune is not run: its callback hooks are called as Tune calls them."""

from __future__ import annotations

import json
import pickle
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from graft.api.spec import FineTuneJobSpec
from graft.jobs import tracker as tracker_module
from graft.jobs.events import JobEvent, TrialEpochEvent, TrialFinishedEvent, TrialStartedEvent, TrialStoppedEvent
from graft.jobs.tracker import PROGRESS_FILE, TrialTracker

pytestmark = pytest.mark.unit

T0 = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)


@dataclass
class FakeTrial:
    """What the tracker reads of a Tune Trial."""

    trial_id: str
    config: dict[str, Any] = field(default_factory=lambda: {"learningRate": 1e-3, "train_loop_config": {"x": 1}})
    error: str | None = None

    def get_error(self) -> Exception | None:
        return RuntimeError(self.error) if self.error else None


class Clock:
    """The tracker's UTC clock (utcnow), moved by the test."""

    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> str:
        return self.now.isoformat(timespec="seconds")

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    c = Clock()
    monkeypatch.setattr(tracker_module, "utcnow", c)
    return c


@pytest.fixture
def released(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Placement groups the tracker asked Ray to remove (no Ray here)."""
    calls: list[str] = []

    def release(pg: str) -> bool:
        calls.append(pg)
        return True

    monkeypatch.setattr(tracker_module, "release_placement_group", release)
    return calls


def _spec(epochs: int = 3, metric: str = "eval_accuracy") -> FineTuneJobSpec:
    return FineTuneJobSpec.model_validate({
        "model": {"source": "/m"}, "dataset": {"source": "/d.jsonl"},
        "training": {"epochs": epochs}, "tuning": {"metric": metric},
    })


def _tracker(tmp_path: Path, events: list[JobEvent] | None = None, epochs: int = 3, metric: str = "eval_accuracy",
             scheme: str = "") -> TrialTracker:
    sink = events if events is not None else []
    return TrialTracker(_spec(epochs, metric), sink.append, progress_uri=str(tmp_path / PROGRESS_FILE), scheme=scheme)


def _result(epoch: int, acc: float, *, checkpoint: str | None = None, **extra: Any) -> dict[str, Any]:
    res: dict[str, Any] = {"epoch": epoch, "train_loss": 1.0 / epoch, "eval_loss": 0.5 / epoch, "eval_accuracy": acc,
                           "steps": 10, "seconds": 2.5, "train_seconds": 2.0, "placement_group": "", "restarts": 0}
    if checkpoint:
        res["checkpoint_path"] = checkpoint
    res.update(extra)
    return res


def _report(t: TrialTracker, trial: FakeTrial, epoch: int, acc: float, **kw: Any) -> None:
    t.on_trial_result(0, [], trial, _result(epoch, acc, **kw))  # type: ignore[arg-type]


def _stored(tmp_path: Path) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads((tmp_path / PROGRESS_FILE).read_text())
    return doc


# -- epochs --------------------------------------------------------------------------------------------


def test_an_epoch_result_is_recorded_with_its_metrics_score_and_checkpoint(tmp_path: Path, clock: Clock) -> None:
    t = _tracker(tmp_path)
    a = FakeTrial("a")
    _report(t, a, 1, 0.7, checkpoint="/runs/x/a/checkpoint_000000")
    state = t.trials["a"]
    assert [(h.epoch, h.eval_accuracy, h.train_loss, h.steps) for h in state.history] == [(1, 0.7, 1.0, 10)]
    assert state.history[0].eval_f1 is None  # a metric the task did not report stays absent
    assert state.scores == {1: 0.7}
    assert state.checkpoints == {1: "/runs/x/a/checkpoint_000000"}
    assert state.checkpoint_times == {1: "2026-01-01T12:00:00+00:00"}
    assert state.config == {"learningRate": 1e-3}  # only the searched keys


def test_every_epoch_is_persisted_before_the_next_one(tmp_path: Path, clock: Clock) -> None:
    t = _tracker(tmp_path)
    _report(t, FakeTrial("a"), 1, 0.7)
    assert [h["epoch"] for h in _stored(tmp_path)["trials"]["a"]["history"]] == [1]
    _report(t, FakeTrial("a"), 2, 0.8)
    assert [h["epoch"] for h in _stored(tmp_path)["trials"]["a"]["history"]] == [1, 2]


def test_a_result_without_epoch_or_score_metric_is_ignored(tmp_path: Path) -> None:
    events: list[JobEvent] = []
    t = _tracker(tmp_path, events)
    t.on_trial_result(0, [], FakeTrial("a"), {"training_iteration": 1, "eval_accuracy": 0.9})  # type: ignore[arg-type]
    t.on_trial_result(0, [], FakeTrial("a"), {"epoch": 1, "train_loss": 0.3})  # type: ignore[arg-type]
    assert t.trials == {} and events == []
    assert not (tmp_path / PROGRESS_FILE).exists()


def test_an_epoch_reported_again_after_a_restart_replaces_the_earlier_entry(tmp_path: Path) -> None:
    t = _tracker(tmp_path)
    a = FakeTrial("a")
    _report(t, a, 1, 0.6)
    _report(t, a, 2, 0.7)
    _report(t, a, 2, 0.75)
    assert [(h.epoch, h.eval_accuracy) for h in t.trials["a"].history] == [(1, 0.6), (2, 0.75)]
    assert t.trials["a"].scores == {1: 0.6, 2: 0.75}


def test_checkpoint_paths_inside_an_object_store_filesystem_get_its_scheme(tmp_path: Path) -> None:
    t = _tracker(tmp_path, scheme="s3://")
    _report(t, FakeTrial("a"), 1, 0.6, checkpoint="bucket/runs/x/checkpoint_000000")
    _report(t, FakeTrial("a"), 2, 0.7, checkpoint="s3://other/checkpoint_000001")
    assert t.trials["a"].checkpoints == {1: "s3://bucket/runs/x/checkpoint_000000", 2: "s3://other/checkpoint_000001"}


def test_trial_start_and_epochs_emit_events_with_config_and_score(tmp_path: Path) -> None:
    events: list[JobEvent] = []
    t = _tracker(tmp_path, events)
    a = FakeTrial("a", config={"epochs": 2, "learningRate": 0.01})
    t.on_trial_start(0, [], a)  # type: ignore[arg-type]
    _report(t, a, 1, 0.6)
    started, epoch = events
    assert isinstance(started, TrialStartedEvent) and started.epochs == 2 and started.config == {"epochs": 2, "learningRate": 0.01}
    assert isinstance(epoch, TrialEpochEvent) and (epoch.epoch, epoch.epochs, epoch.score) == (1, 2, 0.6)
    assert epoch.metrics == {"train_loss": 1.0, "eval_loss": 0.5, "eval_accuracy": 0.6}


def test_epochs_trained_count_toward_the_current_attempt(tmp_path: Path, clock: Clock) -> None:
    t = _tracker(tmp_path)
    t.begin_attempt(restored=False)
    clock.advance(30)
    _report(t, FakeTrial("a"), 1, 0.6)
    _report(t, FakeTrial("b"), 1, 0.5)
    assert t.attempts[-1].epochs_trained == 2
    assert t.attempts[-1].last_progress_at == "2026-01-01T12:00:30+00:00"


# -- how trials end --------------------------------------------------------------------------------


def test_a_trial_that_ran_every_epoch_completes(tmp_path: Path, released: list[str]) -> None:
    events: list[JobEvent] = []
    t = _tracker(tmp_path, events, epochs=2)
    a = FakeTrial("a")
    _report(t, a, 1, 0.6)
    _report(t, a, 2, 0.8)
    t.on_trial_complete(0, [], a)  # type: ignore[arg-type]
    assert t.trials["a"].status == "completed"
    assert _stored(tmp_path)["trials"]["a"]["status"] == "completed"
    finished = events[-1]
    assert isinstance(finished, TrialFinishedEvent)
    assert (finished.status, finished.epochs_completed, finished.best_score) == ("completed", 2, 0.8)
    assert released == []


def test_a_trial_the_scheduler_stopped_is_stopped_early_and_frees_its_workers(tmp_path: Path, released: list[str]) -> None:
    events: list[JobEvent] = []
    t = _tracker(tmp_path, events, epochs=4)
    a = FakeTrial("a")
    _report(t, a, 1, 0.6, placement_group="pg-a")
    t.on_trial_complete(0, [], a)  # type: ignore[arg-type]
    assert t.trials["a"].status == "stopped_early"
    stopped = next(e for e in events if isinstance(e, TrialStoppedEvent))
    assert (stopped.reason, stopped.epoch, stopped.epochs) == ("scheduler", 1, 4)
    assert released == ["pg-a"]


def test_a_trial_ended_by_early_stopping_keeps_its_workers_to_exit_on_their_own(tmp_path: Path, released: list[str]) -> None:
    events: list[JobEvent] = []
    t = _tracker(tmp_path, events, epochs=4)
    a = FakeTrial("a")
    _report(t, a, 2, 0.6, placement_group="pg-a", early_stopped=1)
    t.on_trial_complete(0, [], a)  # type: ignore[arg-type]
    stopped = next(e for e in events if isinstance(e, TrialStoppedEvent))
    assert stopped.reason == "early_stopping"
    assert released == []
    record = t.records()[0]
    assert (record.status, record.stopped_at_epoch, record.epochs_completed) == ("stopped_early", 2, 2)


def test_a_failed_trial_records_its_error_and_frees_its_workers(tmp_path: Path, released: list[str]) -> None:
    events: list[JobEvent] = []
    t = _tracker(tmp_path, events)
    a = FakeTrial("a", error="ValueError: label 7 is out of range")
    _report(t, a, 1, 0.6, placement_group="pg-a")
    t.on_trial_error(0, [], a)  # type: ignore[arg-type]
    state = t.trials["a"]
    assert state.status == "failed" and state.error is not None and "label 7 is out of range" in state.error
    assert _stored(tmp_path)["trials"]["a"]["error"] == state.error
    finished = events[-1]
    assert isinstance(finished, TrialFinishedEvent) and finished.status == "failed" and finished.error == state.error
    assert released == ["pg-a"]


# -- the record in the result ----------------------------------------------------------------------------


def test_records_report_the_last_epochs_metrics_and_the_history_in_order(tmp_path: Path) -> None:
    t = _tracker(tmp_path, epochs=3)
    a = FakeTrial("a")
    for epoch, acc in ((2, 0.8), (1, 0.6), (3, 0.7)):
        _report(t, a, epoch, acc)
    t.on_trial_complete(0, [], a)  # type: ignore[arg-type]
    (record,) = t.records()
    assert [h.epoch for h in record.history] == [1, 2, 3]
    assert record.metrics["eval_accuracy"] == 0.7 and record.best_score == 0.8
    assert record.status == "completed" and record.stopped_at_epoch is None


def test_the_precision_a_trial_trained_in_reaches_its_record_and_survives_a_resume(tmp_path: Path) -> None:
    t = _tracker(tmp_path, epochs=2)
    a = FakeTrial("a")
    _report(t, a, 1, 0.6, precision="fp32")
    restored = _tracker(tmp_path, epochs=2)
    assert restored.load()
    _report(restored, a, 2, 0.7)  # a result without the key keeps what was recorded
    (record,) = restored.records()
    assert record.precision == "fp32"


def test_a_trial_still_running_when_the_job_ends_counts_as_completed_only_if_it_ran_every_epoch(tmp_path: Path) -> None:
    t = _tracker(tmp_path, epochs=2)
    _report(t, FakeTrial("done"), 1, 0.6)
    _report(t, FakeTrial("done"), 2, 0.7)
    _report(t, FakeTrial("cut"), 1, 0.6)
    assert {r.trial_id: r.status for r in t.records()} == {"done": "completed", "cut": "failed"}


def test_best_score_follows_the_metrics_direction_and_skips_nan(tmp_path: Path) -> None:
    t = _tracker(tmp_path, metric="eval_loss")
    a = FakeTrial("a")
    for epoch, loss in ((1, 0.9), (2, float("nan")), (3, 0.4), (4, 0.6)):
        t.on_trial_result(0, [], a, {"epoch": epoch, "train_loss": 1.0, "eval_loss": loss})  # type: ignore[arg-type]
    assert t.best_score(t.trials["a"]) == 0.4
    t.trials["a"].scores = {1: float("nan")}
    assert t.best_score(t.trials["a"]) is None


def test_best_picks_the_best_epoch_whose_checkpoint_still_exists(tmp_path: Path) -> None:
    t = _tracker(tmp_path)
    kept, deleted = tmp_path / "ckpt-a1", tmp_path / "ckpt-b1"
    kept.mkdir()
    _report(t, FakeTrial("a"), 1, 0.7, checkpoint=str(kept))
    _report(t, FakeTrial("b"), 1, 0.9, checkpoint=str(deleted))  # Ray dropped it (num_to_keep)
    _report(t, FakeTrial("b"), 2, 0.95)  # no checkpoint at this epoch
    assert t.best() == ("a", 1, str(kept))


def test_best_is_none_without_any_stored_checkpoint(tmp_path: Path) -> None:
    t = _tracker(tmp_path)
    _report(t, FakeTrial("a"), 1, 0.7)
    assert t.best() is None


# -- recoveries ------------------------------------------------------------------------------------------


def test_the_first_attempt_is_no_resume(tmp_path: Path) -> None:
    t = _tracker(tmp_path)
    assert t.load() is False
    assert t.begin_attempt(restored=False) is None
    assert t.recovery() == {"attempt": 1, "failures_survived": 0, "resumes": [], "time_lost_seconds": 0.0, "epochs_trained": 0}
    assert [a["attempt"] for a in _stored(tmp_path)["attempts"]] == [1]


def test_a_new_attempt_loads_every_trial_the_killed_one_recorded(tmp_path: Path, clock: Clock, released: list[str]) -> None:
    first = _tracker(tmp_path, epochs=2)
    first.begin_attempt(restored=False)
    a, b = FakeTrial("a"), FakeTrial("b")
    _report(first, a, 1, 0.6, checkpoint=f"{tmp_path}/ck/a1")
    _report(first, a, 2, 0.7, checkpoint=f"{tmp_path}/ck/a2")
    first.on_trial_complete(0, [], a)  # type: ignore[arg-type]
    _report(first, b, 1, 0.5, checkpoint=f"{tmp_path}/ck/b1")  # killed here

    second = _tracker(tmp_path, epochs=2)
    assert second.load() is True
    assert {k: (v.status, v.last_epoch, v.checkpoints) for k, v in second.trials.items()} == {
        "a": ("completed", 2, {1: f"{tmp_path}/ck/a1", 2: f"{tmp_path}/ck/a2"}), "b": ("running", 1, {1: f"{tmp_path}/ck/b1"})}
    assert second.trials["b"].history == first.trials["b"].history
    assert [x.attempt for x in second.attempts] == [1] and second.attempts[0].epochs_trained == 3


def test_a_restored_attempt_skips_finished_trials_and_resumes_the_others_from_their_last_epoch(
        tmp_path: Path, clock: Clock, released: list[str]) -> None:
    first = _tracker(tmp_path, epochs=3)
    first.begin_attempt(restored=False)
    a, b, c = FakeTrial("a"), FakeTrial("b"), FakeTrial("c", error="boom")
    for epoch in (1, 2, 3):
        _report(first, a, epoch, 0.5, checkpoint=f"{tmp_path}/ck/a{epoch}")
    first.on_trial_complete(0, [], a)  # type: ignore[arg-type]
    _report(first, b, 1, 0.5, checkpoint=f"{tmp_path}/ck/b1")
    _report(first, b, 2, 0.6, checkpoint=f"{tmp_path}/ck/b2")
    _report(first, c, 1, 0.4, checkpoint=f"{tmp_path}/ck/c1")
    first.on_trial_error(0, [], c)  # type: ignore[arg-type]

    second = _tracker(tmp_path, epochs=3)
    second.load()
    record = second.begin_attempt(restored=True)
    assert record is not None
    assert (record.attempt, record.kind, record.trials_skipped, record.trials_resumed) == (2, "attempt", ["a"], {"b": 2, "c": 1})
    assert second.trials["c"].status == "running" and second.trials["c"].error is None  # errored trials run again
    assert second.attempt == 2


def test_a_trial_restored_from_its_checkpoint_counts_the_restore_as_a_restart(tmp_path: Path, clock: Clock) -> None:
    first = _tracker(tmp_path)
    first.begin_attempt(restored=False)
    _report(first, FakeTrial("b"), 1, 0.5, checkpoint=f"{tmp_path}/ck/b1")
    _report(first, FakeTrial("n"), 1, 0.5)  # no checkpoint yet

    second = _tracker(tmp_path)
    second.load()
    second.begin_attempt(restored=True)
    assert (second.trials["b"].restarts, second.trials["n"].restarts) == (1, 0)
    # graft.jobs.train reports the restore as restarts=1 too: no second, "worker" resume is recorded
    _report(second, FakeTrial("b"), 2, 0.6, restarts=1, resumed_from_epoch=1)
    assert [r.kind for r in second.resumes] == ["attempt"]


def test_time_lost_on_resume_runs_from_the_last_checkpoint_saved(tmp_path: Path, clock: Clock) -> None:
    first = _tracker(tmp_path)
    first.begin_attempt(restored=False)
    clock.advance(100)
    _report(first, FakeTrial("b"), 1, 0.5, checkpoint=f"{tmp_path}/ck/b1")
    clock.advance(40)
    _report(first, FakeTrial("b"), 2, 0.6)  # no checkpoint: this epoch is lost

    clock.advance(50)
    second = _tracker(tmp_path)
    second.load()
    record = second.begin_attempt(restored=True)
    assert record is not None and record.time_lost_seconds == 90.0


def test_an_attempt_that_cannot_restore_starts_every_trial_over(tmp_path: Path, clock: Clock, released: list[str]) -> None:
    first = _tracker(tmp_path, epochs=1)
    first.begin_attempt(restored=False)
    _report(first, FakeTrial("a"), 1, 0.5, checkpoint=f"{tmp_path}/ck/a1")
    first.on_trial_complete(0, [], FakeTrial("a"))  # type: ignore[arg-type]
    _report(first, FakeTrial("b"), 1, 0.5)

    second = _tracker(tmp_path, epochs=1)
    second.load()
    record = second.begin_attempt(restored=False)
    assert record is not None and record.trials_skipped == [] and record.trials_resumed == {"b": 0}
    assert second.trials == {}
    assert _stored(tmp_path)["trials"] == {}


def test_resumes_and_epochs_trained_add_up_over_attempts(tmp_path: Path, clock: Clock) -> None:
    first = _tracker(tmp_path)
    first.begin_attempt(restored=False)
    _report(first, FakeTrial("b"), 1, 0.5, checkpoint=f"{tmp_path}/ck/b1")
    clock.advance(10)

    second = _tracker(tmp_path)
    second.load()
    second.begin_attempt(restored=True)
    _report(second, FakeTrial("b"), 2, 0.6, restarts=1)
    _report(second, FakeTrial("b"), 3, 0.7, restarts=1)

    third = _tracker(tmp_path)
    third.load()
    recovery = third.recovery()
    assert (recovery["attempt"], recovery["failures_survived"], recovery["epochs_trained"]) == (2, 1, 3)
    assert recovery["time_lost_seconds"] == 10.0


def test_a_worker_restart_inside_a_run_is_recorded_once(tmp_path: Path, clock: Clock) -> None:
    t = _tracker(tmp_path)
    t.begin_attempt(restored=False)
    b = FakeTrial("b")
    _report(t, b, 1, 0.5, checkpoint=f"{tmp_path}/ck/b1")
    clock.advance(25)
    _report(t, b, 2, 0.6, restarts=1, resumed_from_epoch=1)
    _report(t, b, 3, 0.7, restarts=1)
    (record,) = t.resumes
    assert (record.kind, record.attempt, record.trials_resumed, record.time_lost_seconds) == ("worker", 1, {"b": 1}, 25.0)
    assert _stored(tmp_path)["resumes"][0]["kind"] == "worker"


def test_the_tracker_pickles_without_its_event_sink(tmp_path: Path) -> None:
    events: list[JobEvent] = []
    t = _tracker(tmp_path, events)
    t.emit = lambda event: events.append(event)  # a closure: not picklable itself
    _report(t, FakeTrial("a"), 1, 0.6)
    copy = pickle.loads(pickle.dumps(t))
    assert copy.trials["a"].scores == {1: 0.6}
    _report(copy, FakeTrial("a"), 2, 0.7)
    assert len(events) == 1  # Tune's unpickled copy emits nowhere


def test_orphaned_placement_groups_are_swept_at_most_every_interval(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    sweeps: list[float] = []
    now = [1000.0]

    def sweep() -> list[str]:
        sweeps.append(now[0])
        return []

    monkeypatch.setattr(tracker_module, "release_orphaned_placement_groups", sweep)
    monkeypatch.setattr(tracker_module, "time", SimpleNamespace(monotonic=lambda: now[0]))
    t = _tracker(tmp_path)
    for step in range(6):
        now[0] = 1000.0 + step * 0.75
        t.on_step_end(step, [])
    assert sweeps == [1000.0, 1002.25]
