"""graft.jobs.progress: live progress folded from job events, the structured log line, progress.json."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from graft.jobs.events import (
    JobFinishedEvent,
    PhaseEvent,
    TrialEpochEvent,
    TrialFinishedEvent,
    TrialStartedEvent,
    TrialStoppedEvent,
    parse_event,
)
from graft.jobs.progress import EVENT_LOG_MARKER, ProgressTracker, ProgressWriter, event_line, read_progress

pytestmark = pytest.mark.unit

T0 = 1_000_000.0


def tracker(mode: str = "max") -> ProgressTracker:
    t = ProgressTracker(total_trials=4, mode=mode, epochs=3, started=T0)  # type: ignore[arg-type]
    t.apply(PhaseEvent(phase="tuning", time=T0 + 10))
    return t


def epoch(t: ProgressTracker, trial: str, n: int, score: float, at: float) -> None:
    t.apply(TrialEpochEvent(trial_id=trial, epoch=n, epochs=3, metrics={}, config={}, score=score, time=at))


def test_trials_are_counted_by_state() -> None:
    t = tracker()
    for trial in ("a", "b", "c"):
        t.apply(TrialStartedEvent(trial_id=trial, config={}, epochs=3))
    t.apply(TrialFinishedEvent(trial_id="a", status="completed", epochs_completed=3))
    t.apply(TrialStoppedEvent(trial_id="b", epoch=1, epochs=3, reason="scheduler"))
    t.apply(TrialFinishedEvent(trial_id="b", status="stopped_early", epochs_completed=1))
    p = t.snapshot(T0 + 60)
    assert (p.trials_total, p.trials_running, p.trials_completed, p.trials_stopped, p.trials_failed) == (4, 1, 1, 1, 0)
    assert p.trials == "2/4 (1 running)" and p.elapsed_seconds == 60


def test_best_so_far_follows_the_metric_mode_and_the_epoch_is_the_best_running_trials() -> None:
    high, low = tracker("max"), tracker("min")
    for t in (high, low):
        epoch(t, "a", 1, 0.5, T0 + 20)
        epoch(t, "b", 2, 0.7, T0 + 30)
    assert (high.snapshot().best_trial, high.snapshot().best_score, high.snapshot().epoch) == ("b", 0.7, 2)
    assert (low.snapshot().best_trial, low.snapshot().best_score, low.snapshot().epoch) == ("a", 0.5, 1)


def test_eta_extrapolates_the_epoch_rate_over_the_epochs_left() -> None:
    t = tracker()
    epoch(t, "a", 1, 0.5, T0 + 20)
    epoch(t, "b", 1, 0.6, T0 + 20)
    # 2 epochs done in 20 s of tuning; left: 2 + 2 running epochs + 2 unstarted trials x 3 = 10 epochs
    assert t.snapshot(T0 + 30).eta_seconds == 100


def test_the_finished_job_has_no_eta_and_reports_its_best() -> None:
    t = tracker()
    epoch(t, "a", 3, 0.5, T0 + 20)
    for trial in ("a", "b", "c", "d"):
        t.apply(TrialFinishedEvent(trial_id=trial, status="completed", epochs_completed=3))
    t.apply(JobFinishedEvent(status="succeeded", best_trial_id="c", best_score=0.9))
    p = t.snapshot(T0 + 90)
    assert p.eta_seconds is None and (p.best_trial, p.best_score, p.job_phase) == ("c", 0.9, "done")


def test_every_event_is_one_structured_log_line_that_parses_back() -> None:
    event = TrialStoppedEvent(trial_id="t1", epoch=1, epochs=3, reason="scheduler")
    line = event_line(event)
    assert line.startswith(EVENT_LOG_MARKER) and "\n" not in line
    assert parse_event(line.removeprefix(EVENT_LOG_MARKER)) == event


def test_the_writer_writes_state_changes_at_once_and_epochs_at_most_every_interval(tmp_path: Path) -> None:
    uri = str(tmp_path / "progress.json")
    writer = ProgressWriter(tracker(), uri, interval=3600)
    writer(TrialStartedEvent(trial_id="a", config={}, epochs=3))
    first = Path(uri).read_text()
    writer(TrialEpochEvent(trial_id="a", epoch=1, epochs=3, metrics={}, config={}, score=0.5))
    assert Path(uri).read_text() == first  # rate-limited
    writer(TrialFinishedEvent(trial_id="a", status="completed", epochs_completed=1))
    progress = read_progress(uri)
    assert progress is not None and progress.trials_completed == 1 and progress.best_score == 0.5


def test_reading_refuses_oversized_or_foreign_documents(tmp_path: Path) -> None:
    big, foreign = tmp_path / "big.json", tmp_path / "foreign.json"
    big.write_text(json.dumps({"trials": "x" * 100_000}))
    foreign.write_text(json.dumps({"hello": 1}))
    assert read_progress(str(big)) is None and read_progress(str(foreign)) is None
    assert read_progress(str(tmp_path / "missing.json")) is None


def test_graft_run_shows_the_same_progress() -> None:
    from rich.console import Console

    from graft.api import FineTuneJob
    from graft.cli.console import TrialTable

    job = FineTuneJob.model_validate({"spec": {"model": {"source": "m"}, "dataset": {"source": "d.csv"}, "tuning": {"numTrials": 2}}})
    table = TrialTable(Console(file=None, force_terminal=False), job, plain=True)
    table.on_event(TrialEpochEvent(trial_id="t1", epoch=1, epochs=3, metrics={}, config={}, score=0.8))
    assert table.progress_line().startswith("trials 0/2 (1 running), best eval_accuracy 0.8000 (trial t1), epoch 1/3")


def test_progress_shows_the_attempt_and_what_it_resumed() -> None:
    from graft.jobs.events import JobResumedEvent
    from graft.jobs.progress import ProgressTracker

    tracker = ProgressTracker(total_trials=2, mode="max", epochs=3)
    tracker.apply(JobResumedEvent(attempt=2, restored=True, trials_skipped=["a"], trials_resumed={"b": 2}, time_lost_seconds=41.0))

    snap = tracker.snapshot(now=tracker.started + 1)
    assert snap.attempt == 2
    assert snap.resumed == "1 finished trial(s) kept; continued: b from epoch 2; time lost 41s"
    assert snap.trials_completed == 1
