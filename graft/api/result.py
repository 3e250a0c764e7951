"""The result document: what graft.jobs writes when training and tuning finish.

It is the only contract between the code that runs inside Ray and whatever started it
(`graft run` locally, the operator on Kubernetes)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from graft.api.base import GROUP_VERSION, ApiModel

# graft.jobs prints the final result document on one log line after this marker, so whoever
# started the job can read it from the job's log when no shared storage holds result.json.
RESULT_LOG_MARKER = "GRAFT_RESULT "


class EpochMetrics(ApiModel):
    epoch: int = Field(ge=1)
    train_loss: float
    eval_loss: float
    # Reported by the task (graft.api.spec.TASK_METRICS): classification has accuracy/F1, causal-lm perplexities.
    eval_accuracy: float | None = Field(default=None, ge=0, le=1)
    eval_f1: float | None = Field(default=None, ge=0, le=1)
    eval_perplexity: float | None = Field(default=None, ge=1)
    train_perplexity: float | None = Field(default=None, ge=1)
    steps: int = Field(ge=0)
    seconds: float = Field(ge=0)


class TrialRecord(ApiModel):
    trial_id: str
    status: Literal["completed", "stopped_early", "failed"]
    config: dict[str, float | int | str | bool]
    epochs_completed: int = Field(ge=0)
    stopped_at_epoch: int | None = Field(default=None, description="Epoch after which the scheduler stopped the trial.")
    metrics: dict[str, float] = Field(default_factory=dict, description="Metrics of the last completed epoch.")
    best_score: float | None = None
    history: list[EpochMetrics] = Field(default_factory=list)
    error: str | None = None


class DistillationReport(ApiModel):
    """Teacher and exported student measured the same way on the validation split."""

    teacher: str
    teacher_parameters: int
    student_parameters: int
    teacher_accuracy: float
    student_accuracy: float
    teacher_ms_per_image: float = Field(description="Median forward time of one image, one thread.")
    student_ms_per_image: float


class TrainingResult(ApiModel):
    api_version: Literal["graft.dev/v1alpha1"] = GROUP_VERSION
    kind: Literal["TrainingResult"] = "TrainingResult"
    job_name: str
    status: Literal["succeeded", "failed"]
    message: str = ""
    metric: str
    mode: Literal["max", "min"]
    best_trial_id: str | None = None
    best_config: dict[str, float | int | str | bool] = Field(default_factory=dict)
    best_metrics: dict[str, float] = Field(default_factory=dict)
    best_score: float | None = None
    model_uri: str | None = Field(default=None, description="Exported Hugging Face model directory of the best trial.")
    checkpoint_uri: str | None = Field(default=None, description="The best trial's Ray Train checkpoint.")
    label_names: list[str] = Field(default_factory=list)
    trials: list[TrialRecord] = Field(default_factory=list)
    started_at: str
    finished_at: str
    phase_seconds: dict[str, float] = Field(default_factory=dict)
    distillation: DistillationReport | None = Field(default=None, description="Teacher vs student, when spec.distillation was set.")
