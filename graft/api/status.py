"""FineTuneJob status: phases, conditions and the training outcome the operator mirrors."""

from __future__ import annotations

from enum import Enum
from typing import Any

from pydantic import Field

from graft.api.base import ApiModel


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
    type: str
    status: str = Field(pattern=r"^(True|False|Unknown)$")
    reason: str = ""
    message: str = ""
    last_transition_time: str | None = None
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
    time: str | None = None


class FineTuneJobStatus(ApiModel):
    phase: Phase = Phase.PENDING
    message: str = ""
    observed_generation: int | None = None
    conditions: list[Condition] = Field(default_factory=list)
    start_time: str | None = None
    completion_time: str | None = None
    ray_job_name: str | None = None
    ray_cluster_name: str | None = None
    job_submission_id: str | None = None
    dashboard_url: str | None = None
    metric: str | None = None
    best_metric: str | None = Field(default=None, description="The best trial's score, printed by kubectl get.")
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
