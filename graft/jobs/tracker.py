"""The driver-side record of an experiment: every trial's history, checkpoints and recoveries.

`TrialTracker` is a Tune callback in the driver process. It emits `JobEvent`s and persists what it
knows to `<experiment>/graft_progress.json` on durable storage after every epoch and trial event,
so a later attempt of the same job (RayJob retry, resubmit, resume after suspend) continues the
record where the killed one left it: trials, histories, checkpoints, earlier attempts.

Recoveries become `ResumeRecord`s in the result: a new attempt that resumed the experiment, and
every restart of a trial's workers inside a run (reported by graft.jobs.train in the epoch metrics
as `restarts` / `resumed_from_epoch`).
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from ray.tune import Callback
from ray.tune.experiment import Trial

from graft import storage
from graft.api.result import EpochMetrics, ResumeRecord, TrialRecord
from graft.api.spec import METRICS, FineTuneJobSpec
from graft.jobs.events import (
    JobEvent,
    TrialEpochEvent,
    TrialFinishedEvent,
    TrialStartedEvent,
    TrialStoppedEvent,
)
from graft.jobs.placement import (
    release_orphaned_placement_groups,
    release_placement_group,
)
from graft.jobs.search_space import describe

PROGRESS_FILE = "graft_progress.json"
log = logging.getLogger("graft.jobs")
SWEEP_INTERVAL_S = 2.0
EPOCH_METRICS = tuple(METRICS)  # every metric a task may report; an epoch carries those its task reports
FINISHED = ("completed", "stopped_early")


def utcnow() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _seconds_between(earlier: str, later: str) -> float:
    return max(0.0, (datetime.fromisoformat(later) - datetime.fromisoformat(earlier)).total_seconds())


@dataclass
class TrialState:
    trial_id: str
    config: dict[str, float | int | str | bool]
    epochs: int
    history: list[EpochMetrics] = field(default_factory=list)
    checkpoints: dict[int, str] = field(default_factory=dict)
    checkpoint_times: dict[int, str] = field(default_factory=dict)
    scores: dict[int, float] = field(default_factory=dict)
    early_stopped: bool = False
    placement_group: str = ""
    status: str = "running"
    error: str | None = None
    restarts: int = 0
    precision: str | None = None

    def to_json(self) -> dict[str, Any]:
        doc = asdict(self)
        doc["history"] = [h.model_dump(mode="json") for h in self.history]
        return doc

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> TrialState:
        doc = dict(doc)
        doc["history"] = [EpochMetrics.model_validate(h) for h in doc.get("history", [])]
        for key in ("checkpoints", "checkpoint_times", "scores"):
            doc[key] = {int(k): v for k, v in doc.get(key, {}).items()}
        return cls(**doc)

    @property
    def last_epoch(self) -> int:
        return max((h.epoch for h in self.history), default=0)


@dataclass
class Attempt:
    attempt: int
    started_at: str
    epochs_trained: int = 0
    last_progress_at: str | None = None


def _discard(_event: JobEvent) -> None:
    """The event sink of a TrialTracker unpickled from Tune's experiment state."""


class TrialTracker(Callback):
    """Records every trial's history, emits JobEvents, persists itself to `progress_uri`."""

    def __init__(
        self, spec: FineTuneJobSpec, emit: Callable[[JobEvent], None], progress_uri: str | None = None, scheme: str = ""
    ) -> None:
        self.spec = spec
        self.scheme = scheme  # "s3://" when Ray reports checkpoint paths inside an object-store filesystem
        self.metric = spec.score_metric
        self.mode = spec.score_mode
        self.emit = emit
        self.progress_uri = progress_uri
        self.trials: dict[str, TrialState] = {}
        self.attempts: list[Attempt] = []
        self.resumes: list[ResumeRecord] = []
        self._last_sweep = 0.0

    def __getstate__(self) -> dict[str, Any]:
        # Tune pickles its callbacks with the Tuner; the event sink (a live console, a queue) stays
        # with the driver's own instance.
        state = dict(self.__dict__)
        state["emit"] = _discard
        return state

    # -- durable progress ----------------------------------------------------------------------------

    def load(self) -> bool:
        """Read an earlier attempt's progress (False when there is none)."""
        if not self.progress_uri or not storage.exists(self.progress_uri):
            return False
        doc = storage.read_json(self.progress_uri)
        self.trials = {k: TrialState.from_json(v) for k, v in doc.get("trials", {}).items()}
        self._drop_foreign_checkpoints()
        self.attempts = [Attempt(**a) for a in doc.get("attempts", [])]
        self.resumes = [ResumeRecord.model_validate(r) for r in doc.get("resumes", [])]
        return True

    def _drop_foreign_checkpoints(self) -> None:
        """Forget every recorded checkpoint outside the experiment directory (the progress file's
        own, symlinks resolved): the file is on storage the tenant can write, and a planted path
        must never be exported (read) or pruned (deleted)."""
        if not self.progress_uri:
            return
        experiment = self.progress_uri.rsplit("/", 1)[0]
        for state in self.trials.values():
            foreign = [epoch for epoch, path in state.checkpoints.items() if not storage.inside(path, experiment)]
            for epoch in foreign:
                log.warning("trial %s: ignoring checkpoint %s recorded outside the experiment %s",
                            state.trial_id, state.checkpoints.pop(epoch), experiment)

    def save(self) -> None:
        if not self.progress_uri:
            return
        doc = {
            "trials": {k: v.to_json() for k, v in self.trials.items()},
            "attempts": [asdict(a) for a in self.attempts],
            "resumes": [r.model_dump(mode="json") for r in self.resumes],
        }
        storage.write_text(self.progress_uri, json.dumps(doc, indent=1))

    @property
    def attempt(self) -> int:
        return self.attempts[-1].attempt if self.attempts else 1

    def begin_attempt(self, restored: bool) -> ResumeRecord | None:
        """Start this attempt's record; when it continues an earlier one, record what is resumed."""
        now = utcnow()
        number = len(self.attempts) + 1
        self.attempts.append(Attempt(attempt=number, started_at=now))
        record = None
        if number > 1:
            skipped = sorted(t.trial_id for t in self.trials.values() if t.status in FINISHED)
            unfinished = [t for t in self.trials.values() if t.status not in FINISHED]
            resumed = {t.trial_id: (t.last_epoch if restored else 0) for t in unfinished}
            if not restored:
                skipped = []
            last_saved = [t.checkpoint_times[e] for t in unfinished for e in t.checkpoint_times if restored]
            previous = self.attempts[-2]
            since = max(last_saved) if last_saved else previous.started_at
            record = ResumeRecord(
                attempt=number, kind="attempt", at=now, trials_skipped=skipped, trials_resumed=resumed,
                time_lost_seconds=round(_seconds_between(since, now), 1),
            )
            self.resumes.append(record)
            for t in unfinished:
                t.status, t.error = "running", None
                if restored and t.checkpoints:
                    t.restarts += 1  # graft.jobs.train counts this restore too: it is not a worker restart
            if not restored:  # nothing durable to continue from: the trials start over
                self.trials = {}
        self.save()
        return record

    # -- Tune callback ---------------------------------------------------------------------------

    def _state(self, trial: Trial) -> TrialState:
        state = self.trials.get(trial.trial_id)
        if state is None:
            config = describe(trial.config)
            epochs = int(config.get("epochs", self.spec.training.epochs))
            state = TrialState(trial.trial_id, config, epochs)
            self.trials[trial.trial_id] = state
        return state

    def on_step_end(self, iteration: int, trials: list[Trial], **info: Any) -> None:
        now = time.monotonic()
        if now - self._last_sweep >= SWEEP_INTERVAL_S:
            self._last_sweep = now
            release_orphaned_placement_groups()

    def on_trial_start(self, iteration: int, trials: list[Trial], trial: Trial, **info: Any) -> None:
        state = self._state(trial)
        self.emit(TrialStartedEvent(trial_id=state.trial_id, config=state.config, epochs=state.epochs))

    def on_trial_result(self, iteration: int, trials: list[Trial], trial: Trial, result: dict[str, Any], **info: Any) -> None:
        if "epoch" not in result or self.metric not in result:
            return
        state = self._state(trial)
        epoch = int(result["epoch"])
        metrics = {k: float(result[k]) for k in EPOCH_METRICS if k in result}
        entry = EpochMetrics(epoch=epoch, steps=int(result.get("steps", 0)), seconds=float(result.get("seconds", 0.0)), **metrics)
        self._note_worker_restart(state, result)
        state.history = [h for h in state.history if h.epoch != epoch] + [entry]
        state.scores[epoch] = float(result[self.metric])
        if result.get("checkpoint_path"):
            path = str(result["checkpoint_path"])
            state.checkpoints[epoch] = path if "://" in path or not self.scheme else self.scheme + path.lstrip("/")
            state.checkpoint_times[epoch] = utcnow()
        state.early_stopped = bool(result.get("early_stopped"))
        state.placement_group = str(result.get("placement_group") or state.placement_group)
        if result.get("precision"):
            state.precision = str(result["precision"])  # what training.precision resolved to on the workers
        if self.attempts:
            self.attempts[-1].epochs_trained += 1
            self.attempts[-1].last_progress_at = utcnow()
        self.save()
        self.emit(TrialEpochEvent(trial_id=state.trial_id, epoch=epoch, epochs=state.epochs, metrics=metrics, config=state.config, score=state.scores[epoch]))

    def _note_worker_restart(self, state: TrialState, result: dict[str, Any]) -> None:
        """A higher `restarts` count than last seen: Ray Train restarted the trial's workers."""
        restarts = int(result.get("restarts", 0) or 0)
        if restarts <= state.restarts:
            return
        state.restarts = restarts
        since = max(state.checkpoint_times.values()) if state.checkpoint_times else None
        now = utcnow()
        self.resumes.append(
            ResumeRecord(
                attempt=self.attempt, kind="worker", at=now,
                trials_resumed={state.trial_id: int(result.get("resumed_from_epoch", state.last_epoch) or 0)},
                time_lost_seconds=round(_seconds_between(since, now), 1) if since else 0.0,
            )
        )

    def on_trial_complete(self, iteration: int, trials: list[Trial], trial: Trial, **info: Any) -> None:
        state = self._state(trial)
        done = state.last_epoch
        if done < state.epochs:
            state.status = "stopped_early"
            reason: Literal["scheduler", "early_stopping"] = "early_stopping" if state.early_stopped else "scheduler"
            if reason == "scheduler":
                release_placement_group(state.placement_group)
            self.emit(TrialStoppedEvent(trial_id=state.trial_id, epoch=done, epochs=state.epochs, reason=reason))
        else:
            state.status = "completed"
        self.save()
        self.emit(TrialFinishedEvent(trial_id=state.trial_id, status=state.status, epochs_completed=done, best_score=self.best_score(state)))  # type: ignore[arg-type]

    def on_trial_error(self, iteration: int, trials: list[Trial], trial: Trial, **info: Any) -> None:
        from graft.jobs.tune import trial_error

        state = self._state(trial)
        state.status = "failed"
        state.error = trial_error(trial)
        release_placement_group(state.placement_group)
        self.save()
        self.emit(TrialFinishedEvent(trial_id=state.trial_id, status="failed", epochs_completed=state.last_epoch, best_score=self.best_score(state), error=state.error))

    # -- summaries ---------------------------------------------------------------------------------

    def best_score(self, state: TrialState) -> float | None:
        scores = [s for s in state.scores.values() if not math.isnan(s)]
        if not scores:
            return None
        return max(scores) if self.mode == "max" else min(scores)

    def records(self) -> list[TrialRecord]:
        out = []
        for state in self.trials.values():
            status = state.status if state.status != "running" else ("completed" if state.last_epoch >= state.epochs else "failed")
            history = sorted(state.history, key=lambda h: h.epoch)
            last = history[-1] if history else None
            out.append(
                TrialRecord(
                    trial_id=state.trial_id,
                    status=status,  # type: ignore[arg-type]
                    config=state.config,
                    epochs_completed=state.last_epoch,
                    stopped_at_epoch=state.last_epoch if status == "stopped_early" else None,
                    metrics=epoch_metrics(last) if last else {},
                    best_score=self.best_score(state),
                    precision=state.precision,  # type: ignore[arg-type]
                    history=history,
                    error=state.error,
                )
            )
        return out

    def recovery(self) -> dict[str, Any]:
        """The result's failure-survival fields: attempt, failures_survived, resumes, time lost, epochs trained."""
        return {
            "attempt": self.attempt,
            "failures_survived": len(self.resumes),
            "resumes": list(self.resumes),
            "time_lost_seconds": round(sum(r.time_lost_seconds for r in self.resumes), 1),
            "epochs_trained": sum(a.epochs_trained for a in self.attempts),
        }

    def best(self) -> tuple[str, int, str] | None:
        """(trial_id, epoch, checkpoint_path) of the best reported epoch whose checkpoint still exists."""
        candidates: list[tuple[float, str, int, str]] = []
        for state in self.trials.values():
            for epoch, score in state.scores.items():
                path = state.checkpoints.get(epoch)
                if path is None or math.isnan(score) or not storage.exists(path):
                    continue
                candidates.append((score, state.trial_id, epoch, path))
        if not candidates:
            return None
        pick = max if self.mode == "max" else min
        score, trial_id, epoch, path = pick(candidates, key=lambda c: c[0])
        return trial_id, epoch, path


def epoch_metrics(entry: EpochMetrics) -> dict[str, float]:
    """The metrics one epoch reported (its task's), by name."""
    return {k: float(v) for k in EPOCH_METRICS if (v := getattr(entry, k)) is not None}
