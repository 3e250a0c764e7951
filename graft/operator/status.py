"""The one place FineTuneJob and ModelEndpoint status is computed: pure functions of what was observed.

A backend's `RunObservation.state` maps onto the Graft phase: Absent/Pending -> Pending,
Running -> Running, Suspended -> Suspended, Failed -> Failed, Succeeded -> Running until the
result is read, then Succeeded (or Failed when the result says so). Terminal phases reached by
running are sticky: later observations (the RayJob deleted by the TTL, a restart) never move
the job back; only promotion and the TTL cleanup are still recorded. A job refused before it
ran (invalid spec, policy, storage) stays refused: the spec is immutable.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from graft.api.endpoint import ModelEndpointStatus, PromotionRecord, ServedModel
from graft.api.result import TrainingResult
from graft.api.status import Admitted, Condition, FineTuneJobStatus, Phase, Progress, Promotion, TrialSummary, bound_status
from graft.operator.backends.base import RunObservation, RunState, ServeObservation

# Condition types, one per question a user asks (`kubectl wait --for=condition=Succeeded ftj/NAME`).
ACCEPTED = "Accepted"  # spec valid, admitted by policy, storage reachable
RUNNING = "Running"
SUSPENDED = "Suspended"
SUCCEEDED = "Succeeded"
PROMOTED = "Promoted"
RAYJOB_DELETED = "RayJobDeleted"  # the finished RayJob was deleted after spec.runtime.ttlSecondsAfterFinished
READY = "Ready"  # ModelEndpoint

WAITING = ("WaitingForRayJob", "the RayJob is created; waiting for KubeRay to start its Ray cluster")
MAX_TRIALS_IN_STATUS = 50  # status stays small; the full result stays on storage


def iso(now: datetime) -> str:
    return now.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class Refusal:
    """Why the job does not run: reason (InvalidSpec, PolicyViolation, StorageRequired) and problems."""

    reason: str
    problems: list[str]
    retryable: bool = False  # a capacity limit: the job waits instead of ending Rejected


@dataclass(frozen=True)
class JobObservation:
    """Everything `compute_status` needs, gathered by the loop."""

    generation: int | None = None
    metric: str | None = None  # the score metric (printed next to Best from the start)
    refusal: Refusal | None = None
    admitted: Admitted | None = None
    run: RunObservation | None = None
    result: TrainingResult | None = None
    result_error: str | None = None  # why the result could not be read (yet)
    result_uri: str | None = None  # where the result document is on the job's storage (None: no storage)
    progress: Progress | None = None
    promotion: Promotion | None = None
    endpoint_url: str | None = None
    ray_job_deleted: bool = False


def set_condition(
    conditions: list[Condition], type_: str, status: str, reason: str, message: str, now: str, generation: int | None
) -> list[Condition]:
    """Replace the condition of `type_`, keeping lastTransitionTime when the status did not change."""
    old = next((c for c in conditions if c.type == type_), None)
    since = old.last_transition_time if old is not None and old.status == status and old.last_transition_time else now
    new = Condition(type=type_, status=status, reason=reason, message=message[:4096], last_transition_time=since,
                    observed_generation=generation)
    return [c for c in conditions if c.type != type_] + [new]


# Reasons of a Ray job whose driver exited with an error (shared cluster; KubeRay's RayJob): the
# job's result, when it wrote one, says why in graft.jobs' words (reason StorageFailed).
EXITED_WITH_ERROR = frozenset({"JobFailed", "AppFailed", "RayJobFailed"})


def _phase_of_run(run: RunObservation | None, suspend: bool) -> tuple[Phase, str, str]:
    if run is None or run.state == RunState.ABSENT:
        if suspend:
            return Phase.SUSPENDED, "Suspended", "spec.suspend is true"
        return Phase.PENDING, WAITING[0], WAITING[1]
    phase = {
        RunState.PENDING: Phase.PENDING, RunState.RUNNING: Phase.RUNNING, RunState.SUSPENDED: Phase.SUSPENDED,
        RunState.SUCCEEDED: Phase.RUNNING, RunState.FAILED: Phase.FAILED,
    }[run.state]
    return phase, run.reason, run.message


def _fmt(value: float | None) -> str | None:
    return None if value is None else f"{value:.4g}"


def _refused(st: FineTuneJobStatus, conds: list[Condition], ref: Refusal, ts: str, gen: int | None) -> FineTuneJobStatus:
    msg = "; ".join(ref.problems)
    if ref.retryable:
        st.message = f"waiting: {msg}"
        st.conditions = set_condition(conds, ACCEPTED, "False", ref.reason, msg, ts, gen)
        return st
    st.phase = Phase.REJECTED if ref.reason == "PolicyViolation" else Phase.FAILED
    what = {"InvalidSpec": "the spec is invalid", "PolicyViolation": "rejected by policy",
            "StorageRequired": "no storage every Ray pod can reach",
            "ReferenceFailed": "a referenced FineTuneJob has no model"}.get(ref.reason, ref.reason)
    st.message = f"{what}: {msg}"
    conds = set_condition(conds, ACCEPTED, "False", ref.reason, msg, ts, gen)
    conds = set_condition(conds, SUCCEEDED, "False", ref.reason, st.message, ts, gen)
    st.completion_time = st.completion_time or ts
    st.conditions = conds
    return st


def _record_result(st: FineTuneJobStatus, res: TrainingResult) -> None:
    st.result = res.model_dump(mode="json", by_alias=True, exclude_none=True, exclude={"trials"})
    st.metric = res.metric
    st.best_metric = _fmt(res.best_score)
    st.best_trial = res.best_trial_id
    st.best_config = {k: str(v) for k, v in res.best_config.items()} or None
    st.model_uri = res.model_uri
    st.trials = [
        TrialSummary(trial_id=t.trial_id, status=t.status, epochs_completed=t.epochs_completed, score=t.best_score)
        for t in res.trials[:MAX_TRIALS_IN_STATUS]
    ]


def _settled(progress: Progress, result: TrainingResult | None) -> Progress:
    """A finished job's progress: nothing running, and the trial counts of its result when there is
    one (the last live snapshot may predate the last trial's end); `kubectl get` then prints N/N."""
    update: dict[str, Any] = {"trials_running": 0, "eta_seconds": None, "epoch": None, "epochs": None}
    if result is not None and result.trials:
        statuses = [t.status for t in result.trials]
        update |= {"trials_completed": statuses.count("completed"), "trials_stopped": statuses.count("stopped_early"),
                   "trials_failed": statuses.count("failed")}
        finished = len(statuses)
    else:
        finished = progress.trials_completed + progress.trials_stopped + progress.trials_failed
    update["trials"] = f"{finished}/{max(progress.trials_total, finished)}"
    return progress.model_copy(update=update)


def _terminal(st: FineTuneJobStatus, conds: list[Condition], obs: JobObservation, ts: str, gen: int | None) -> FineTuneJobStatus:
    if obs.promotion is not None:
        st.promotion = obs.promotion
        conds = _promotion_condition(conds, obs.promotion, ts, gen)
    if obs.endpoint_url:
        st.endpoint = obs.endpoint_url
    if obs.ray_job_deleted:
        conds = set_condition(
            conds, RAYJOB_DELETED, "True", "TTLExpired",
            f"RayJob {st.ray_job_name} deleted after spec.runtime.ttlSecondsAfterFinished; the status is kept", ts, gen,
        )
    st.conditions = conds
    return st


def compute_status(previous: FineTuneJobStatus | None, obs: JobObservation, now: datetime, suspend: bool = False) -> FineTuneJobStatus:
    """The new FineTuneJob status; pure, and idempotent (same inputs, same status)."""
    st = (previous or FineTuneJobStatus()).model_copy(deep=True)
    ts, gen = iso(now), obs.generation
    st.observed_generation = gen
    conds = list(st.conditions)
    if obs.metric and not st.metric:
        st.metric = obs.metric
    accepted = next((c for c in conds if c.type == ACCEPTED), None)
    if Phase(st.phase).is_terminal and accepted is not None and accepted.status == "True":
        return _terminal(st, conds, obs, ts, gen)
    if obs.refusal is not None:
        return _refused(st, conds, obs.refusal, ts, gen)
    if obs.admitted is not None:
        st.admitted = obs.admitted
    conds = set_condition(conds, ACCEPTED, "True", "Admitted", "the spec is valid and admitted", ts, gen)
    run = obs.run
    phase, reason, message = _phase_of_run(run, suspend)
    if run is not None:
        st.ray_job_name = run.ray_job_name or st.ray_job_name
        st.ray_cluster_name = run.cluster_name or st.ray_cluster_name
        st.job_submission_id = run.submission_id or st.job_submission_id
        st.dashboard_url = run.dashboard_url or st.dashboard_url
        st.log_uri = run.log_uri or st.log_uri
        if run.start_time and not st.start_time:
            st.start_time = run.start_time
    st.result_uri = obs.result_uri or st.result_uri
    if run is not None and run.state == RunState.SUCCEEDED:
        if obs.result is not None and obs.result.status == "succeeded":
            phase, reason = Phase.SUCCEEDED, "TrainingSucceeded"
            message = f"best {obs.result.metric} {_fmt(obs.result.best_score)} (trial {obs.result.best_trial_id})"
        elif obs.result is not None:
            phase, reason, message = Phase.FAILED, "TrainingFailed", obs.result.message or "graft.jobs reported a failure"
        else:
            reason, message = "ReadingResult", "the Ray job succeeded; reading its result"
            if obs.result_error:
                message = f"the Ray job succeeded; waiting for its result: {obs.result_error}"
    elif run is not None and run.reason in EXITED_WITH_ERROR and obs.result is not None and obs.result.status == "failed":
        reason, message = obs.result.reason or reason, obs.result.message or message  # graft.jobs' own words
    if obs.progress is not None and phase == Phase.RUNNING:
        st.progress = obs.progress
        if obs.progress.best_score is not None and obs.result is None:
            st.best_metric, st.best_trial = _fmt(obs.progress.best_score), obs.progress.best_trial
    if obs.result is not None:
        _record_result(st, obs.result)
    if phase == Phase.RUNNING and not st.start_time:
        st.start_time = ts
    if phase.is_terminal:
        st.completion_time = st.completion_time or (run.end_time if run else None) or ts
        if st.progress is not None:
            st.progress = _settled(st.progress, obs.result)
    st.phase, st.message = phase, message
    conds = set_condition(conds, RUNNING, "True" if phase == Phase.RUNNING else "False", reason, message, ts, gen)
    conds = set_condition(
        conds, SUSPENDED, "True" if phase == Phase.SUSPENDED else "False",
        reason if phase == Phase.SUSPENDED else "NotSuspended", message if phase == Phase.SUSPENDED else "", ts, gen,
    )
    verdict = {Phase.SUCCEEDED: "True", Phase.FAILED: "False"}.get(phase, "Unknown")
    conds = set_condition(conds, SUCCEEDED, verdict, reason, message, ts, gen)
    return _terminal(st, conds, obs, ts, gen) if phase.is_terminal else _with_conditions(st, conds)


def _with_conditions(st: FineTuneJobStatus, conds: list[Condition]) -> FineTuneJobStatus:
    st.conditions = conds
    return st


def _promotion_condition(conds: list[Condition], p: Promotion, ts: str, gen: int | None) -> list[Condition]:
    status = "True" if p.decision == "promoted" else "False"
    return set_condition(conds, PROMOTED, status, p.decision.capitalize(), f"{p.endpoint}: {p.reason}", ts, gen)


def status_patch(server: dict[str, Any] | None, new: FineTuneJobStatus | ModelEndpointStatus) -> dict[str, Any]:
    """A merge patch turning the status on the server (its wire dict) into `new`: changed fields,
    and null for fields that disappeared. Diffing against the server's document (not a parsed
    model with defaults) makes sure defaults such as phase Pending are written too."""
    new_wire = bound_status(new.to_wire())  # the one place status is written: always within its bounds
    old_wire = server or {}
    patch: dict[str, Any] = {k: v for k, v in new_wire.items() if old_wire.get(k) != v}
    for key in old_wire:
        if key not in new_wire:
            patch[key] = None
    return patch


def needs_work(status: FineTuneJobStatus | None, ray_job_path: bool) -> bool:
    """Whether the safety net still has something to do for a FineTuneJob: anything not finished;
    a finished one until promotion and (on the RayJob path) the TTL cleanup are done."""
    if status is None or not Phase(status.phase).is_terminal:
        return True
    conds = {c.type: c.status for c in status.conditions}
    if conds.get(ACCEPTED) != "True":
        return False  # refused before running: nothing to clean up
    if ray_job_path:  # promotion happens before the TTL deletes the RayJob
        return conds.get(RAYJOB_DELETED) != "True"
    return status.phase == Phase.SUCCEEDED and status.promotion is None


# ----------------------------------------------------------------------------- ModelEndpoint


def compute_endpoint_status(
    previous: ModelEndpointStatus | None, model: ServedModel, obs: ServeObservation, now: datetime,
    generation: int | None, history_limit: int = 20, error: str | None = None,
) -> ModelEndpointStatus:
    """ModelEndpoint status (phase Pending, Deploying, Updating, Ready, Failed) from its serving side."""
    st = (previous or ModelEndpointStatus()).model_copy(deep=True)
    ts = iso(now)
    st.observed_generation = generation
    st.application = obs.application or st.application
    conds = list(st.conditions)
    if not any(h.version == model.version and h.uri == model.uri for h in st.history):
        record = PromotionRecord(version=model.version, uri=model.uri, score=model.score, source_job=model.source_job, time=ts)
        st.history = (st.history + [record])[-history_limit:]
    if error:
        st.phase = "Failed"
        reason = "PolicyViolation" if error.startswith("refused by policy") else "InvalidSpec"
        st.conditions = set_condition(conds, READY, "False", reason, error, ts, generation)
        return st
    st.ray_service_name = obs.ray_service_name or st.ray_service_name
    if not obs.exists:
        st.phase, st.ready_replicas = "Pending", 0
        st.conditions = set_condition(conds, READY, "False", obs.reason or "Creating", obs.message or "creating", ts, generation)
        return st
    st.ready_replicas = obs.replicas
    if obs.ready and obs.served_version is not None:
        st.served_version = obs.served_version
        if obs.served_version == model.version:
            st.served_uri, st.served_score = model.uri, model.score
    if obs.app_status in ("DEPLOY_FAILED", "UNHEALTHY"):
        phase, reason, message = "Failed", f"Application{obs.app_status.title().replace('_', '')}", obs.message or obs.app_status
    elif obs.ready and st.served_version == model.version:
        phase, reason, message = "Ready", "Serving", f"serving version {model.version} ({model.uri})"
    elif obs.ready:
        phase, reason = "Updating", "RollingOut"
        message = f"rolling out version {model.version}; version {st.served_version} serves meanwhile"
    else:
        phase, reason = "Deploying", obs.reason or "Deploying"
        message = obs.message or "waiting for the Ray cluster and the Serve application"
    st.phase = phase
    st.url = obs.url if obs.ready else st.url
    st.conditions = set_condition(conds, READY, "True" if phase in ("Ready", "Updating") else "False", reason, message, ts, generation)
    return st
