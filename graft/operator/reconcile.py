"""The one place FineTuneJob and ModelEndpoint status is computed: pure functions of what was observed.

KubeRay RayJob status (`jobDeploymentStatus` x `jobStatus`) maps onto the Graft phases:

| jobDeploymentStatus            | jobStatus           | phase                         |
|--------------------------------|---------------------|-------------------------------|
| (no RayJob yet), New, Initializing, Waiting | any   | Pending                       |
| Running, Retrying              | PENDING / ""        | Pending (Retrying: Running)   |
| Running                        | RUNNING             | Running                       |
| Suspending, Suspended          | any                 | Suspended                     |
| Complete                       | SUCCEEDED           | Running until the result is read, then Succeeded (or Failed if the result says so) |
| Complete                       | FAILED, STOPPED     | Failed                        |
| Failed, ValidationFailed       | any                 | Failed (reason from the RayJob) |

Terminal phases reached by running (Succeeded, Failed) are sticky: later observations (the RayJob
deleted by the TTL, a restart) never move the job back. A job refused before it ran (invalid spec,
policy) is re-evaluated when its spec is fixed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from graft.api.endpoint import ModelEndpointStatus, PromotionRecord, ServedModel
from graft.api.result import TrainingResult
from graft.api.status import Condition, FineTuneJobStatus, Phase, Promotion, TrialSummary
from graft.operator.names import ANNOTATION_MODEL_VERSION

# Condition types, one per question a user asks.
ACCEPTED = "Accepted"  # spec valid and admitted by policy
RUNNING = "Running"
SUSPENDED = "Suspended"
SUCCEEDED = "Succeeded"
PROMOTED = "Promoted"
RAYJOB_DELETED = "RayJobDeleted"  # the finished RayJob was deleted after spec.runtime.ttlSecondsAfterFinished


# Before KubeRay has acted, and just before the operator creates the RayJob: the same status, so the
# create path writes status once (with the child's name) and the RayJob's first event changes nothing.
WAITING = ("WaitingForRayJob", "the RayJob is created; waiting for KubeRay to start its Ray cluster")


def iso(now: datetime) -> str:
    return now.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class JobObservation:
    """Everything `compute_status` needs, gathered by the handlers."""

    generation: int | None = None
    spec_errors: list[str] = field(default_factory=list)  # semantic validation, "path: message"
    unsupported: str | None = None  # a valid spec the operator cannot run
    rejection: list[str] | None = None  # policy violations (None: admitted)
    ray_job_name: str | None = None
    ray_job: dict[str, Any] | None = None  # the RayJob object (None: not created yet / deleted)
    result: TrainingResult | None = None
    result_error: str | None = None  # why the result could not be read (yet)
    promotion: Promotion | None = None
    endpoint_url: str | None = None
    suspend: bool = False
    ray_job_deleted: bool = False  # the operator deleted the finished RayJob after its TTL
    log_uri: str | None = None  # where the finished job's log was copied (shared clusters)


def _set_condition(
    conditions: list[Condition], type_: str, status: str, reason: str, message: str, now: str, generation: int | None
) -> list[Condition]:
    """Replace the condition of `type_`, keeping lastTransitionTime when the status did not change."""
    old = next((c for c in conditions if c.type == type_), None)
    since = old.last_transition_time if old is not None and old.status == status and old.last_transition_time else now
    new = Condition(
        type=type_, status=status, reason=reason, message=message, last_transition_time=since, observed_generation=generation
    )
    return [c for c in conditions if c.type != type_] + [new]


def _phase_of_rayjob(ray_job: dict[str, Any], suspend: bool) -> tuple[Phase, str, str]:
    """(phase, reason, message) from a RayJob's status."""
    st = ray_job.get("status") or {}
    deploy = st.get("jobDeploymentStatus") or ""
    job = st.get("jobStatus") or ""
    message = st.get("message") or ""
    if deploy in ("Suspending", "Suspended"):
        return Phase.SUSPENDED, f"RayJob{deploy}", message or "the Ray cluster is deleted while spec.suspend is true"
    if deploy in ("Failed", "ValidationFailed"):
        reason = st.get("reason") or ("ValidationFailed" if deploy == "ValidationFailed" else "RayJobFailed")
        return Phase.FAILED, reason, message or f"the RayJob ended {deploy}"
    if deploy == "Complete":
        if job == "SUCCEEDED":
            return Phase.RUNNING, "ReadingResult", "the Ray job succeeded; reading its result"
        return Phase.FAILED, f"Job{job.capitalize() or 'Failed'}", message or f"the Ray job ended {job or 'without a status'}"
    if suspend and deploy in ("", "New"):
        return Phase.SUSPENDED, "Suspended", "spec.suspend is true: no Ray cluster is created"
    if deploy == "Retrying":
        return Phase.RUNNING, "Retrying", message or "the Ray job failed and is retried on a new cluster (spec.runtime.backoffLimit)"
    if deploy == "Running" and job == "RUNNING":
        return Phase.RUNNING, "JobRunning", "the Ray job is running"
    if deploy == "Running":
        return Phase.PENDING, "JobPending", message or "the Ray cluster is up; the Ray job is being submitted"
    if deploy == "Initializing":
        return Phase.PENDING, "RayClusterInitializing", "the Ray cluster is starting"
    return Phase.PENDING, WAITING[0], WAITING[1]


def _summaries(result: TrainingResult) -> list[TrialSummary]:
    return [
        TrialSummary(trial_id=t.trial_id, status=t.status, epochs_completed=t.epochs_completed, score=t.best_score)
        for t in result.trials
    ]


def _fmt(value: float | None) -> str | None:
    return None if value is None else f"{value:.4g}"


def compute_status(previous: FineTuneJobStatus | None, obs: JobObservation, now: datetime) -> FineTuneJobStatus:
    """The new FineTuneJob status; pure, and idempotent (same inputs, same status)."""
    prev = previous or FineTuneJobStatus()
    ts = iso(now)
    st = prev.model_copy(deep=True)
    st.observed_generation = obs.generation
    gen = obs.generation
    conds = list(st.conditions)

    accepted = next((c for c in st.conditions if c.type == ACCEPTED), None)
    ran = accepted is not None and accepted.status == "True"
    if obs.log_uri:
        st.log_uri = obs.log_uri
    if Phase(st.phase).is_terminal and ran:
        # Sticky terminal phase; only promotion and the endpoint may still change.
        if obs.promotion is not None:
            st.promotion = obs.promotion
            conds = _promotion_condition(conds, obs.promotion, ts, gen)
        if obs.endpoint_url:
            st.endpoint = obs.endpoint_url
        if obs.ray_job_deleted:
            conds = _set_condition(
                conds, RAYJOB_DELETED, "True", "TTLExpired",
                f"RayJob {st.ray_job_name} deleted after spec.runtime.ttlSecondsAfterFinished; the status is kept",
                ts, gen,
            )
        st.conditions = conds
        return st

    if obs.spec_errors or obs.unsupported:
        problems = obs.spec_errors or [obs.unsupported or ""]
        msg = "; ".join(problems)
        st.phase = Phase.FAILED
        reason = "InvalidSpec" if obs.spec_errors else "UnsupportedSpec"
        st.message = f"{'the spec is invalid' if obs.spec_errors else 'the spec cannot run here'}: {msg}"
        conds = _set_condition(conds, ACCEPTED, "False", reason, msg, ts, gen)
        conds = _set_condition(conds, SUCCEEDED, "False", reason, st.message, ts, gen)
        st.completion_time = st.completion_time or ts
        st.conditions = conds
        return st
    if obs.rejection is not None:
        msg = "; ".join(obs.rejection)
        st.phase = Phase.REJECTED
        st.message = f"rejected by policy: {msg}"
        conds = _set_condition(conds, ACCEPTED, "False", "PolicyViolation", msg, ts, gen)
        st.completion_time = st.completion_time or ts
        st.conditions = conds
        return st

    conds = _set_condition(conds, ACCEPTED, "True", "Admitted", "the spec is valid and admitted", ts, gen)
    if obs.ray_job_name:
        st.ray_job_name = obs.ray_job_name

    if obs.ray_job is None:
        phase, reason, message = (
            (Phase.SUSPENDED, "Suspended", "spec.suspend is true")
            if obs.suspend
            else (Phase.PENDING, WAITING[0], WAITING[1])
        )
    else:
        phase, reason, message = _phase_of_rayjob(obs.ray_job, obs.suspend)
        rst = obs.ray_job.get("status") or {}
        st.ray_cluster_name = rst.get("rayClusterName") or st.ray_cluster_name
        st.job_submission_id = rst.get("jobId") or st.job_submission_id
        st.dashboard_url = rst.get("dashboardURL") or st.dashboard_url
        if rst.get("startTime") and not st.start_time:
            st.start_time = rst["startTime"]

    if reason == "ReadingResult" and obs.result is not None:
        res = obs.result
        if res.status == "succeeded":
            phase, reason = Phase.SUCCEEDED, "TrainingSucceeded"
            message = f"best {res.metric} {_fmt(res.best_score)} (trial {res.best_trial_id})"
        else:
            phase, reason, message = Phase.FAILED, "TrainingFailed", res.message or "graft.jobs reported a failure"
    elif reason == "ReadingResult" and obs.result_error:
        message = f"the Ray job succeeded; waiting for its result: {obs.result_error}"

    if obs.result is not None:
        res = obs.result
        st.result = res.model_dump(mode="json", by_alias=True, exclude_none=True)
        st.metric = res.metric
        st.best_metric = _fmt(res.best_score)
        st.best_trial = res.best_trial_id
        st.best_config = {k: str(v) for k, v in res.best_config.items()} or None
        st.model_uri = res.model_uri
        st.trials = _summaries(res)

    if phase in (Phase.RUNNING,) and not st.start_time:
        st.start_time = ts
    if phase.is_terminal:
        end = ((obs.ray_job or {}).get("status") or {}).get("endTime")
        st.completion_time = st.completion_time or end or ts

    st.phase = phase
    st.message = message
    conds = _set_condition(conds, RUNNING, "True" if phase == Phase.RUNNING else "False", reason, message, ts, gen)
    conds = _set_condition(
        conds, SUSPENDED, "True" if phase == Phase.SUSPENDED else "False",
        reason if phase == Phase.SUSPENDED else "NotSuspended", message if phase == Phase.SUSPENDED else "", ts, gen,
    )
    if phase == Phase.SUCCEEDED:
        conds = _set_condition(conds, SUCCEEDED, "True", reason, message, ts, gen)
    elif phase == Phase.FAILED:
        conds = _set_condition(conds, SUCCEEDED, "False", reason, message, ts, gen)
    else:
        conds = _set_condition(conds, SUCCEEDED, "Unknown", reason, message, ts, gen)
    if obs.promotion is not None:
        st.promotion = obs.promotion
        conds = _promotion_condition(conds, obs.promotion, ts, gen)
    if obs.endpoint_url:
        st.endpoint = obs.endpoint_url
    st.conditions = conds
    return st


def _promotion_condition(conds: list[Condition], p: Promotion, ts: str, gen: int | None) -> list[Condition]:
    status = "True" if p.decision == "promoted" else "False"
    return _set_condition(conds, PROMOTED, status, p.decision.capitalize(), f"{p.endpoint}: {p.reason}", ts, gen)


def status_patch(server: dict[str, Any] | None, new: FineTuneJobStatus | ModelEndpointStatus) -> dict[str, Any]:
    """A merge patch turning the status on the server (its wire dict) into `new`: changed fields,
    and null for fields that disappeared. Diffing against the server's document (not a parsed
    model with defaults) makes sure defaults such as phase Pending are written too."""
    new_wire = new.to_wire()
    old_wire = server or {}
    patch: dict[str, Any] = {k: v for k, v in new_wire.items() if old_wire.get(k) != v}
    for key in old_wire:
        if key not in new_wire:
            patch[key] = None
    return patch


# ----------------------------------------------------------------------------- ModelEndpoint

READY = "Ready"


@dataclass(frozen=True)
class EndpointObservation:
    generation: int | None
    model: ServedModel
    application: str
    url: str
    ray_service_name: str | None = None
    ray_service: dict[str, Any] | None = None
    error: str | None = None  # spec the operator cannot deploy
    history_limit: int = 20


def compute_endpoint_status(
    previous: ModelEndpointStatus | None, obs: EndpointObservation, now: datetime
) -> ModelEndpointStatus:
    """ModelEndpoint status from its RayService (phase Pending, Deploying, Updating, Ready, Failed)."""
    st = (previous or ModelEndpointStatus()).model_copy(deep=True)
    ts = iso(now)
    gen = obs.generation
    st.observed_generation = gen
    st.application = obs.application
    conds = list(st.conditions)
    if not any(h.version == obs.model.version and h.uri == obs.model.uri for h in st.history):
        st.history = (
            st.history
            + [PromotionRecord(version=obs.model.version, uri=obs.model.uri, score=obs.model.score,
                               source_job=obs.model.source_job, time=ts)]
        )[-obs.history_limit:]
    if obs.error:
        st.phase = "Failed"
        st.conditions = _set_condition(conds, READY, "False", "UnsupportedSpec", obs.error, ts, gen)
        return st
    if obs.ray_service_name:
        st.ray_service_name = obs.ray_service_name
    rs = obs.ray_service
    if rs is None:
        st.phase = "Pending"
        st.ready_replicas = 0
        st.conditions = _set_condition(conds, READY, "False", "CreatingRayService", "creating the RayService", ts, gen)
        return st
    rst = rs.get("status") or {}
    apps = ((rst.get("activeServiceStatus") or {}).get("applicationStatuses") or {})
    app = apps.get(obs.application) or {}
    app_status = app.get("status") or ""
    ready_cond = next((c for c in rst.get("conditions") or [] if c.get("type") == "Ready"), None)
    ready = rst.get("serviceStatus") == "Running" or (ready_cond or {}).get("status") == "True"
    st.ready_replicas = int(rst.get("numServeEndpoints") or 0)
    meta = rs.get("metadata") or {}
    current_gen = meta.get("generation")
    observed = rst.get("observedGeneration")
    deployed_version = (meta.get("annotations") or {}).get(ANNOTATION_MODEL_VERSION)
    if ready and app_status == "RUNNING" and current_gen is not None and observed == current_gen and deployed_version:
        st.served_version = int(deployed_version)
        if st.served_version == obs.model.version:
            st.served_uri = obs.model.uri
            st.served_score = obs.model.score
    if app_status in ("DEPLOY_FAILED", "UNHEALTHY"):
        phase, reason, message = "Failed", f"Application{app_status.title().replace('_', '')}", app.get("message") or app_status
    elif ready and st.served_version == obs.model.version:
        phase, reason, message = "Ready", "Serving", f"serving version {obs.model.version} ({obs.model.uri})"
    elif ready:
        phase, reason, message = "Updating", "RollingOut", f"rolling out version {obs.model.version}; version {st.served_version} serves meanwhile"
    else:
        phase, reason = "Deploying", (ready_cond or {}).get("reason") or "Deploying"
        message = (ready_cond or {}).get("message") or "waiting for the Ray cluster and the Serve application"
    st.phase = phase
    st.url = obs.url if ready else st.url
    st.conditions = _set_condition(conds, READY, "True" if phase in ("Ready", "Updating") else "False", reason, message, ts, gen)
    return st



def needs_resync(status: dict[str, Any] | None) -> bool:
    """Whether the safety-net timer still has work on a FineTuneJob (wire status): anything not
    finished, and a finished job until its result, promotion and RayJob cleanup are done."""
    status = status or {}
    phase = status.get("phase") or Phase.PENDING.value
    if not Phase(phase).is_terminal:
        return True
    conds = {c.get("type"): c.get("status") for c in status.get("conditions") or []}
    if conds.get(ACCEPTED) != "True":
        return False  # refused before running: nothing to clean up
    if status.get("jobSubmissionId") and not status.get("rayJobName"):  # shared cluster: no RayJob to delete
        return phase == Phase.SUCCEEDED.value and not status.get("promotion")
    return conds.get(RAYJOB_DELETED) != "True"
