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
    precision: Literal["bf16", "fp16", "fp32"] | None = Field(
        default=None, description="The precision the trial trained in: spec.training.precision resolved on the workers' hardware."
    )
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


class ResumeRecord(ApiModel):
    """One recovery: a new attempt that continued the experiment, or a trial's workers restarted."""

    attempt: int = Field(ge=1, description="The attempt that resumed (1 = the first run of the job).")
    kind: Literal["attempt", "worker"] = Field(
        description="attempt: a new run of the job (RayJob retry, resubmit, resume after suspend) continued the Tune experiment; "
        "worker: Ray Train restarted a trial's workers inside the run."
    )
    at: str = Field(description="When the recovery happened (UTC, ISO 8601).")
    trials_skipped: list[str] = Field(default_factory=list, description="Trials that had finished before: not rerun.")
    trials_resumed: dict[str, int] = Field(
        default_factory=dict, description="Trial -> the epoch it continued from (0: no checkpoint, it started over)."
    )
    time_lost_seconds: float = Field(
        default=0.0, ge=0,
        description="Wall time between the last checkpoint saved before the failure and the recovery: work redone plus downtime.",
    )


class TrainingResult(ApiModel):
    api_version: Literal["graft.dev/v1alpha1"] = GROUP_VERSION
    kind: Literal["TrainingResult"] = "TrainingResult"
    job_name: str
    status: Literal["succeeded", "failed"]
    reason: str | None = Field(default=None, description="Why it failed, as a condition reason: StorageFailed names a storage problem.")
    message: str = ""
    metric: str
    mode: Literal["max", "min"]
    best_trial_id: str | None = None
    best_config: dict[str, float | int | str | bool] = Field(default_factory=dict)
    best_metrics: dict[str, float] = Field(default_factory=dict)
    best_score: float | None = None
    precision: Literal["bf16", "fp16", "fp32"] | None = Field(
        default=None, description="The precision the best trial trained in (spec.training.precision resolved on the workers' hardware)."
    )
    model_uri: str | None = Field(default=None, description="Exported Hugging Face model directory of the best trial.")
    checkpoint_uri: str | None = Field(default=None, description="The best trial's Ray Train checkpoint.")
    label_names: list[str] = Field(default_factory=list)
    trials: list[TrialRecord] = Field(default_factory=list)
    started_at: str
    finished_at: str
    phase_seconds: dict[str, float] = Field(default_factory=dict)
    distillation: DistillationReport | None = Field(default=None, description="Teacher vs student, when spec.distillation was set.")
    # Failures survived (issue 9): every attempt and worker restart that resumed instead of starting over.
    attempt: int = Field(default=1, ge=1, description="The attempt that wrote this result (1 + earlier interrupted attempts).")
    failures_survived: int = Field(default=0, ge=0, description="Interrupted attempts plus worker-group restarts, all resumed.")
    resumes: list[ResumeRecord] = Field(default_factory=list)
    time_lost_seconds: float = Field(default=0.0, ge=0, description="Sum of the resumes' time lost.")
    epochs_trained: int = Field(default=0, ge=0, description="Epochs trained over all attempts, redone ones included.")
