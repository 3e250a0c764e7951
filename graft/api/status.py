"""FineTuneJob status: phases, conditions, what admission decided, live progress and the outcome."""

from __future__ import annotations

from enum import Enum
from typing import Any

from pydantic import Field

from graft.api.base import ApiModel

# RFC 3339 timestamps are written by the operator as `2026-01-01T00:00:00Z`.
DATE_TIME: dict[str, Any] = {"format": "date-time"}
# Conditions are a list-map keyed by type (one condition per type, merged by type by server-side apply).
CONDITIONS_LIST_MAP: dict[str, Any] = {"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]}


class Phase(str, Enum):
    PENDING = "Pending"
    RUNNING = "Running"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    SUSPENDED = "Suspended"
    REJECTED = "Rejected"

    @property
    def is_terminal(self) -> bool:
        return self in (Phase.SUCCEEDED, Phase.FAILED, Phase.REJECTED)


class Condition(ApiModel):
    type: str = Field(min_length=1, max_length=316)
    status: str = Field(pattern=r"^(True|False|Unknown)$")
    reason: str = ""
    message: str = ""
    last_transition_time: str | None = Field(default=None, json_schema_extra=DATE_TIME)
    observed_generation: int | None = None


class TrialSummary(ApiModel):
    trial_id: str
    status: str
    epochs_completed: int = 0
    score: float | None = None


class Promotion(ApiModel):
    endpoint: str
    decision: str = Field(description="promoted, refused or recorded")
    reason: str = ""
    time: str | None = Field(default=None, json_schema_extra=DATE_TIME)


class Admitted(ApiModel):
    """What admission decided, persisted so every later reconcile runs exactly this (never re-derived)."""

    queue_name: str | None = Field(default=None, description="Kueue LocalQueue in force (spec, queue-name label or policy default).")
    image: str | None = None
    ttl_seconds_after_finished: int | None = None
    active_deadline_seconds: int | None = None
    policies: list[str] = Field(default_factory=list, description="FineTunePolicies that selected the namespace.")
    defaults_from: dict[str, str] = Field(default_factory=dict, description="Field filled by a policy default -> that policy.")
    references: dict[str, str] = Field(
        default_factory=dict, description="Field holding a finetunejob:// reference -> the model URI it resolved to (kept for every later reconcile)."
    )
    time: str | None = Field(default=None, json_schema_extra=DATE_TIME)


class Progress(ApiModel):
    """Live training progress, folded from the structured events graft.jobs emits."""

    trials: str = Field(default="", description="Printed by kubectl get: done/total, e.g. '3/8 (2 running)'.")
    trials_total: int = 0
    trials_running: int = 0
    trials_completed: int = 0
    trials_stopped: int = Field(default=0, description="Stopped early (ASHA or early stopping).")
    trials_failed: int = 0
    best_score: float | None = None
    best_trial: str | None = None
    epoch: int | None = Field(default=None, description="Current epoch of the best running trial.")
    epochs: int | None = None
    elapsed_seconds: int | None = None
    eta_seconds: int | None = Field(default=None, description="Rough estimate from the epoch rate so far.")
    job_phase: str | None = Field(default=None, description="graft.jobs phase: preflight, loading, tuning, exporting, done.")
    attempt: int | None = Field(default=None, description="The job's attempt (2+: it resumed an earlier attempt's experiment).")
    resumed: str | None = Field(default=None, description="What this attempt resumed: trials kept, trials continued from which epoch, time lost.")
    updated: str | None = Field(default=None, json_schema_extra=DATE_TIME)


class FineTuneJobStatus(ApiModel):
    phase: Phase = Phase.PENDING
    message: str = ""
    observed_generation: int | None = None
    conditions: list[Condition] = Field(default_factory=list, json_schema_extra=CONDITIONS_LIST_MAP)
    admitted: Admitted | None = None
    progress: Progress | None = None
    start_time: str | None = Field(default=None, json_schema_extra=DATE_TIME)
    completion_time: str | None = Field(default=None, json_schema_extra=DATE_TIME)
    ray_job_name: str | None = None
    ray_cluster_name: str | None = None
    job_submission_id: str | None = None
    dashboard_url: str | None = None
    metric: str | None = None
    best_metric: str | None = Field(default=None, description="The best trial's score (so far), printed by kubectl get.")
    best_trial: str | None = None
    best_config: dict[str, str] | None = None
    model_uri: str | None = None
    endpoint: str | None = Field(default=None, description="URL of the endpoint serving this job's model.")
    log_uri: str | None = Field(default=None, description="Copy of the finished job's training log (shared Ray clusters).")
    trials: list[TrialSummary] = Field(default_factory=list)
    promotion: Promotion | None = None
    result: dict[str, Any] | None = Field(
        default=None, json_schema_extra={"x-kubernetes-preserve-unknown-fields": True}
    )
