"""FineTuneJob status: phases, conditions, what admission decided, live progress and the outcome."""

from __future__ import annotations

import json
import re
from enum import Enum
from typing import Any

from pydantic import Field

from graft.api.base import ApiModel

# RFC 3339 timestamps are written by the operator as `2026-01-01T00:00:00Z`.
DATE_TIME: dict[str, Any] = {"format": "date-time"}
# Conditions are a list-map keyed by type (one condition per type, merged by type by server-side apply).
CONDITIONS_LIST_MAP: dict[str, Any] = {"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]}

# Bounds of everything the operator writes to status (`bound_status`), whatever a job's result holds:
# a status over etcd's 1.5 MiB object limit would fail every write, retried forever. The full result
# stays in result.json on the job's storage (`status.resultUri`); `status.omitted` names what the status left out.
MAX_STATUS_STRING = 4096  # characters of one string (a message, a label, a metric name, an object key)
MAX_STATUS_ITEMS = 100  # items of one list or entries of one object (labels, metrics, resumes)
STATUS_BUDGET_BYTES = 256 * 1024  # the whole status as JSON, leaving the object room for its spec
MAX_OMITTED_NOTES = 20
# The result fields the operator acts on (phase, promotion, `kubectl get`): kept when the budget is short.
RESULT_CORE = frozenset({
    "apiVersion", "kind", "jobName", "status", "reason", "message", "metric", "mode", "bestTrialId", "bestScore",
    "precision", "modelUri", "checkpointUri", "startedAt", "finishedAt", "attempt", "failuresSurvived",
    "timeLostSeconds", "epochsTrained",
})
# The result's lists and maps: emptied (not dropped) when the budget is short, as the result document has them.
_COLLECTIONS = frozenset({"labelNames", "bestConfig", "bestMetrics", "phaseSeconds", "resumes", "trials"})
# Fields computed once from the result and then carried over: their notes are kept on later writes.
_CARRIED = ("result", "bestConfig", "trials")
_FIELD = re.compile(r"^[a-z][a-zA-Z]{0,31}$")  # a camelCase field name of the API (tenants' keys are named `*`)
_UNBOUNDED = ("admitted",)  # what admission decided is bounded by the spec's own validation; never cut


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
    result_uri: str | None = Field(default=None, description="Where the finished job's full result document (result.json) is on its storage.")
    trials: list[TrialSummary] = Field(default_factory=list)
    promotion: Promotion | None = None
    result: dict[str, Any] | None = Field(
        default=None, json_schema_extra={"x-kubernetes-preserve-unknown-fields": True}
    )
    omitted: list[str] | None = Field(
        default=None, description="What the status left out to stay small (bound_status); the full result is at resultUri."
    )


def _cut(text: str) -> str:
    marker = f"...[{len(text)} characters, cut]"
    return text[: MAX_STATUS_STRING - len(marker)] + marker


def _bound(value: Any, path: str, cuts: dict[str, int]) -> Any:
    """`value` with every string, list and object within the limits; `cuts`: path -> what was cut."""
    if isinstance(value, str):
        if len(value) <= MAX_STATUS_STRING:
            return value
        cuts[f"{path}: strings cut to {MAX_STATUS_STRING} characters"] = cuts.get(f"{path}: strings cut to {MAX_STATUS_STRING} characters", 0) + 1
        return _cut(value)
    if isinstance(value, list):
        if len(value) > MAX_STATUS_ITEMS:
            cuts[f"{path}: {len(value) - MAX_STATUS_ITEMS} of {len(value)} items left out"] = 1
        return [_bound(v, f"{path}[]", cuts) for v in value[:MAX_STATUS_ITEMS]]
    if isinstance(value, dict):
        if len(value) > MAX_STATUS_ITEMS:
            cuts[f"{path}: {len(value) - MAX_STATUS_ITEMS} of {len(value)} entries left out"] = 1
        out: dict[str, Any] = {}
        for key, v in list(value.items())[:MAX_STATUS_ITEMS]:
            inner = f"{path}.{key}" if _FIELD.match(key) else f"{path}.*"  # a field name, or a tenant's key
            out.setdefault(_bound(key, f"{path} keys", cuts), _bound(v, inner, cuts))
        return out
    return value


def _size(doc: dict[str, Any]) -> int:
    return len(json.dumps(doc, separators=(",", ":")))


def _shrink(doc: dict[str, Any], notes: list[str]) -> None:
    """Over the budget: the result down to its core fields, then the trials, best config and progress."""
    result = doc.get("result")
    if _size(doc) > STATUS_BUDGET_BYTES and isinstance(result, dict):
        doc["result"] = {k: v if k in RESULT_CORE else type(v)() for k, v in result.items()
                         if k in RESULT_CORE or (k in _COLLECTIONS and isinstance(v, (list, dict)))}
        where = doc.get("resultUri") or "result.json on the job's storage"
        notes.append(f"result: only its core fields are kept (status budget {STATUS_BUDGET_BYTES} bytes); the full result is {where}")
    for key in ("trials", "bestConfig", "progress"):
        if _size(doc) > STATUS_BUDGET_BYTES and doc.get(key):
            doc.pop(key)
            notes.append(f"{key}: left out (status budget {STATUS_BUDGET_BYTES} bytes)")


def bound_status(wire: dict[str, Any]) -> dict[str, Any]:
    """A status document (camelCase wire form) within the limits above, `omitted` naming what was left
    out: strings cut with a marker, lists and objects capped with a count, and the whole checked
    against STATUS_BUDGET_BYTES. Idempotent: a bounded status comes back unchanged."""
    cuts: dict[str, int] = {}
    doc = {k: v if k in _UNBOUNDED or k == "omitted" else _bound(v, k, cuts) for k, v in wire.items()}
    notes = [f"{what} ({n})" if n > 1 else what for what, n in cuts.items()]
    _shrink(doc, notes)
    kept = [n for n in doc.pop("omitted", None) or [] if n.split(":", 1)[0].split(".", 1)[0].split("[", 1)[0] in _CARRIED]
    merged = list(dict.fromkeys(kept + [n[:MAX_STATUS_STRING] for n in notes]))[:MAX_OMITTED_NOTES]
    if merged:
        doc["omitted"] = merged
    return doc
