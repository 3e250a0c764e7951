"""Live progress of a job, folded from its events: what `kubectl get ftj` and `graft run` show.

`ProgressTracker.apply(event)` folds the typed events of `graft.jobs.events` (pure, no I/O);
`snapshot(now)` returns a `graft.api.status.Progress`. In a RayJob the driver also prints every
event as one structured line (`GRAFT_EVENT {json}`, for `graft logs` and any log reader) and
writes the snapshot to `progress.json` next to the result document, at most every few seconds,
where the operator reads it. Import-light: pydantic and fsspec only.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from graft.api.status import Progress
from graft.jobs.events import (
    JobEvent,
    JobFinishedEvent,
    JobResumedEvent,
    PhaseEvent,
    TrialEpochEvent,
    TrialFinishedEvent,
    TrialStartedEvent,
    TrialStoppedEvent,
)

EVENT_LOG_MARKER = "GRAFT_EVENT "
PROGRESS_FILE = "progress.json"
MAX_PROGRESS_BYTES = 64 * 1024  # what a reader accepts: the snapshot is a few hundred bytes


@dataclass
class _Trial:
    epochs: int
    epoch: int = 0
    status: str = "running"  # running, completed, stopped, failed
    best: float | None = None


class ProgressTracker:
    """Trials total/running/completed/stopped/failed, best so far, epoch of the best running trial, ETA."""

    def __init__(self, total_trials: int, mode: Literal["max", "min"], epochs: int, started: float | None = None) -> None:
        self.total, self.mode, self.epochs = total_trials, mode, epochs
        self.started = started if started is not None else time.time()
        self.tuning_started: float | None = None
        self.trials: dict[str, _Trial] = {}
        self.best_score: float | None = None
        self.best_trial: str | None = None
        self.job_phase: str | None = None
        self.attempt: int | None = None
        self.resumed: str | None = None

    def _better(self, a: float, b: float | None) -> bool:
        return b is None or (a > b if self.mode == "max" else a < b)

    def _trial(self, trial_id: str, epochs: int) -> _Trial:
        return self.trials.setdefault(trial_id, _Trial(epochs=epochs or self.epochs))

    def _score(self, trial_id: str, trial: _Trial, score: float | None) -> None:
        if score is None:
            return
        if self._better(score, trial.best):
            trial.best = score
        if self._better(score, self.best_score):
            self.best_score, self.best_trial = score, trial_id

    def apply(self, event: JobEvent) -> None:
        if isinstance(event, PhaseEvent):
            self.job_phase = event.phase
            if event.phase == "tuning":
                self.tuning_started = event.time
        elif isinstance(event, TrialStartedEvent):
            self._trial(event.trial_id, event.epochs)
        elif isinstance(event, TrialEpochEvent):
            trial = self._trial(event.trial_id, event.epochs)
            trial.epoch = max(trial.epoch, event.epoch)
            self._score(event.trial_id, trial, event.score)
        elif isinstance(event, TrialStoppedEvent):
            trial = self._trial(event.trial_id, event.epochs)
            trial.status, trial.epoch = "stopped", event.epoch
        elif isinstance(event, TrialFinishedEvent):
            trial = self._trial(event.trial_id, event.epochs_completed)
            if trial.status != "stopped":
                trial.status = {"completed": "completed", "stopped_early": "stopped", "failed": "failed"}[event.status]
            trial.epoch = max(trial.epoch, event.epochs_completed)
            self._score(event.trial_id, trial, event.best_score)
        elif isinstance(event, JobResumedEvent):
            self._resumed(event)
        elif isinstance(event, JobFinishedEvent):
            self.job_phase = "done" if event.status == "succeeded" else "failed"
            if event.best_score is not None and event.best_trial_id:
                self.best_score, self.best_trial = event.best_score, event.best_trial_id

    def _resumed(self, event: JobResumedEvent) -> None:
        """An attempt that continues an earlier one: its finished trials count as done here too."""
        self.attempt = event.attempt
        if not event.restored:
            self.resumed = "nothing to resume from: trials started over"
            return
        for trial_id in event.trials_skipped:
            self.trials[trial_id] = _Trial(epochs=self.epochs, epoch=self.epochs, status="completed")
        continued = ", ".join(f"{t} from epoch {e}" for t, e in event.trials_resumed.items()) or "none"
        self.resumed = (f"{len(event.trials_skipped)} finished trial(s) kept; continued: {continued}; "
                        f"time lost {event.time_lost_seconds:.0f}s")

    def _count(self, status: str) -> int:
        return sum(1 for t in self.trials.values() if t.status == status)

    def eta_seconds(self, now: float) -> int | None:
        """Remaining epochs (unstarted trials at the spec's epochs, running ones to their end) over
        the epoch rate so far. An upper bound under ASHA, which stops trials early."""
        start = self.tuning_started or self.started
        done = sum(t.epoch for t in self.trials.values())
        if done == 0 or now <= start:
            return None
        left = sum(t.epochs - t.epoch for t in self.trials.values() if t.status == "running")
        left += max(0, self.total - len(self.trials)) * self.epochs
        return int(left * (now - start) / done)

    def snapshot(self, now: float | None = None, updated: str | None = None) -> Progress:
        now = time.time() if now is None else now
        running = [(tid, t) for tid, t in self.trials.items() if t.status == "running"]
        lead = max(running, key=lambda kv: (kv[1].best is not None, kv[1].best or 0.0) if self.mode == "max"
                   else (kv[1].best is not None, -(kv[1].best or 0.0)), default=None)
        finished = len(self.trials) - len(running)
        text = f"{finished}/{self.total}" + (f" ({len(running)} running)" if running else "")
        return Progress(
            trials=text,
            trials_total=self.total,
            trials_running=len(running),
            trials_completed=self._count("completed"),
            trials_stopped=self._count("stopped"),
            trials_failed=self._count("failed"),
            best_score=self.best_score,
            best_trial=self.best_trial,
            epoch=lead[1].epoch if lead else None,
            epochs=lead[1].epochs if lead else None,
            elapsed_seconds=int(max(0.0, now - self.started)),
            eta_seconds=self.eta_seconds(now) if running or len(self.trials) < self.total else None,
            job_phase=self.job_phase,
            attempt=self.attempt,
            resumed=self.resumed,
            updated=updated or time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now)),
        )


def event_line(event: JobEvent) -> str:
    """The structured log line of an event: `GRAFT_EVENT {json}`."""
    return EVENT_LOG_MARKER + event.model_dump_json()


class ProgressWriter:
    """Folds events and writes the snapshot to `uri` (fsspec) at most every `interval` seconds, and
    at once when a trial or the job changes state. A failed write is reported, never raised."""

    def __init__(self, tracker: ProgressTracker, uri: str, interval: float = 5.0,
                 warn: Callable[[str], None] = lambda _m: None) -> None:
        self.tracker, self.uri, self.interval, self.warn = tracker, uri, interval, warn
        self._last = 0.0

    def __call__(self, event: JobEvent) -> None:
        self.tracker.apply(event)
        urgent = not isinstance(event, TrialEpochEvent)
        now = time.time()
        if urgent or now - self._last >= self.interval:
            self._last = now
            self.write(now)

    def write(self, now: float) -> None:
        from graft import storage  # s3:// through pyarrow (no s3fs), like every graft file

        doc = self.tracker.snapshot(now).to_wire()
        try:
            storage.write_text(self.uri, json.dumps(doc))
        except OSError as exc:
            self.warn(f"cannot write progress to {self.uri}: {exc}")


def read_progress(uri: str) -> Progress | None:
    """The snapshot at `uri`; None when it is missing, too large or not a Progress document."""
    from pydantic import ValidationError

    from graft import storage

    try:
        fs, path = storage.fsspec_filesystem(uri)
        with fs.open(path, "rb") as fh:
            data = fh.read(MAX_PROGRESS_BYTES + 1)
    except (OSError, ImportError, ValueError):  # missing, unreachable, or no fsspec backend for the scheme
        return None
    if len(data) > MAX_PROGRESS_BYTES:
        return None
    try:
        return Progress.model_validate_json(data)
    except ValidationError:
        return None
