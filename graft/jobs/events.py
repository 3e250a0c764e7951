"""Typed progress events emitted by `run_job` in the driver process (for live tables and logs).

Every event has a `type` discriminator, so `JobEvent` round-trips through JSON:
`TypeAdapter(JobEvent).validate_json(event.model_dump_json())`.
"""

from __future__ import annotations

import time
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

JobPhase = Literal["preflight", "loading", "tuning", "exporting", "done", "failed"]


class _Event(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    time: float = Field(default_factory=time.time, description="Unix time the event was emitted.")


class PhaseEvent(_Event):
    """The job entered a phase; `seconds` is how long the previous phase took."""

    type: Literal["phase"] = "phase"
    phase: JobPhase
    previous: JobPhase | None = None
    seconds: float | None = None
    message: str = ""


class TrialStartedEvent(_Event):
    type: Literal["trial_started"] = "trial_started"
    trial_id: str
    config: dict[str, float | int | str | bool]
    epochs: int


class TrialEpochEvent(_Event):
    """One finished epoch of one trial, with its metrics (train_loss, eval_loss, eval_accuracy, eval_f1)."""

    type: Literal["trial_epoch"] = "trial_epoch"
    trial_id: str
    epoch: int
    epochs: int
    metrics: dict[str, float]
    config: dict[str, float | int | str | bool]
    score: float | None = None


class TrialStoppedEvent(_Event):
    """The scheduler (ASHA) or the trial's own early stopping ended it before its last epoch."""

    type: Literal["trial_stopped"] = "trial_stopped"
    trial_id: str
    epoch: int
    epochs: int
    reason: Literal["scheduler", "early_stopping"]


class TrialFinishedEvent(_Event):
    type: Literal["trial_finished"] = "trial_finished"
    trial_id: str
    status: Literal["completed", "stopped_early", "failed"]
    epochs_completed: int
    best_score: float | None = None
    error: str | None = None


class JobResumedEvent(_Event):
    """This attempt continues an earlier attempt's experiment (RayJob retry, resubmit, resume after suspend)."""

    type: Literal["job_resumed"] = "job_resumed"
    attempt: int
    restored: bool = Field(description="False: the earlier attempt left no restorable experiment, trials start over.")
    trials_skipped: list[str] = Field(default_factory=list)
    trials_resumed: dict[str, int] = Field(default_factory=dict)
    time_lost_seconds: float = 0.0


class JobFinishedEvent(_Event):
    type: Literal["job_finished"] = "job_finished"
    status: Literal["succeeded", "failed"]
    best_trial_id: str | None = None
    best_score: float | None = None
    model_uri: str | None = None
    message: str = ""


JobEvent = Annotated[
    PhaseEvent | TrialStartedEvent | TrialEpochEvent | TrialStoppedEvent | TrialFinishedEvent | JobResumedEvent | JobFinishedEvent,
    Field(discriminator="type"),
]
JOB_EVENT = TypeAdapter(JobEvent)


def parse_event(data: str | bytes) -> JobEvent:
    """Parse one JSON-encoded event."""
    return JOB_EVENT.validate_json(data)
