"""Progress events round-trip through JSON; the learning-curve plot renders a result document."""

from __future__ import annotations

from pathlib import Path

import pytest

from graft.api.result import EpochMetrics, TrainingResult, TrialRecord
from graft.jobs.events import PhaseEvent, TrialEpochEvent, TrialStoppedEvent, parse_event
from graft.jobs.plot import plot_trials

pytestmark = pytest.mark.unit


def test_events_round_trip_through_json_by_type() -> None:
    events = [
        PhaseEvent(phase="tuning", previous="loading", seconds=1.5),
        TrialEpochEvent(trial_id="t1", epoch=1, epochs=2, metrics={"eval_accuracy": 0.8}, config={"learningRate": 1e-4}, score=0.8),
        TrialStoppedEvent(trial_id="t2", epoch=1, epochs=2, reason="scheduler"),
    ]
    assert [parse_event(e.model_dump_json()) for e in events] == events


def epoch(n: int, acc: float) -> EpochMetrics:
    return EpochMetrics(epoch=n, train_loss=0.5, eval_loss=0.4, eval_accuracy=acc, eval_f1=acc, steps=3, seconds=1.0)


def test_plot_marks_stopped_trials_and_writes_a_png(tmp_path: Path) -> None:
    result = TrainingResult(
        job_name="demo", status="succeeded", metric="eval_accuracy", mode="max", best_trial_id="a",
        trials=[
            TrialRecord(trial_id="a", status="completed", config={"learningRate": 1e-4}, epochs_completed=2, history=[epoch(1, 0.7), epoch(2, 0.9)]),
            TrialRecord(trial_id="b", status="stopped_early", config={"learningRate": 1e-9}, epochs_completed=1, stopped_at_epoch=1, history=[epoch(1, 0.5)]),
            TrialRecord(trial_id="c", status="failed", config={"learningRate": 1e-3}, epochs_completed=0, error="boom"),
        ],
        started_at="2026-01-01T00:00:00+00:00", finished_at="2026-01-01T00:01:00+00:00",
    )
    out = plot_trials(result, tmp_path / "plots" / "curves.png")
    data = out.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000


def test_plot_rejects_an_unknown_metric(tmp_path: Path) -> None:
    result = TrainingResult(job_name="x", status="failed", metric="eval_loss", mode="min", started_at="t", finished_at="t")
    with pytest.raises(ValueError, match="cannot plot"):
        plot_trials(result, tmp_path / "x.png", metric="bleu")
