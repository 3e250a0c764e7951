"""compute_status / compute_endpoint_status / decide_promotion: pure status and promotion logic."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from graft.api import FineTuneJobStatus, TrainingResult
from graft.api.endpoint import ServedModel
from graft.api.status import Phase
from graft.operator.promotion import decide_promotion
from graft.operator.reconcile import (
    EndpointObservation,
    JobObservation,
    compute_endpoint_status,
    compute_status,
    status_patch,
)

pytestmark = pytest.mark.unit

T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)


def rayjob(deploy: str = "", job: str = "", **status: Any) -> dict[str, Any]:
    return {"metadata": {"name": "demo"}, "status": {"jobDeploymentStatus": deploy, "jobStatus": job, **status}}


def result(score: float | None = 0.9, status: str = "succeeded", metric: str = "eval_accuracy", mode: str = "max",
           uri: str | None = "s3://b/demo/model") -> TrainingResult:
    return TrainingResult(job_name="demo", status=status, metric=metric, mode=mode, best_score=score, best_trial_id="t1",
                          model_uri=uri, started_at="a", finished_at="b", message="boom" if status == "failed" else "")


def step(prev: FineTuneJobStatus | None, t: int = 0, **obs: Any) -> FineTuneJobStatus:
    return compute_status(prev, JobObservation(generation=1, ray_job_name="demo", **obs), T0 + timedelta(seconds=t))


def cond(st: FineTuneJobStatus, type_: str) -> Any:
    return next(c for c in st.conditions if c.type == type_)


@pytest.mark.parametrize(
    ("deploy", "job", "phase"),
    [
        ("", "", Phase.PENDING),
        ("Initializing", "", Phase.PENDING),
        ("Running", "PENDING", Phase.PENDING),
        ("Running", "RUNNING", Phase.RUNNING),
        ("Retrying", "", Phase.RUNNING),
        ("Suspending", "", Phase.SUSPENDED),
        ("Suspended", "", Phase.SUSPENDED),
        ("Complete", "SUCCEEDED", Phase.RUNNING),  # until the result is read
        ("Complete", "FAILED", Phase.FAILED),
        ("Complete", "STOPPED", Phase.FAILED),
        ("Failed", "", Phase.FAILED),
        ("ValidationFailed", "", Phase.FAILED),
    ],
)
def test_rayjob_status_maps_to_phase(deploy: str, job: str, phase: Phase) -> None:
    assert step(None, ray_job=rayjob(deploy, job)).phase == phase


def test_no_rayjob_yet_is_pending_and_records_the_child_name() -> None:
    st = step(None)
    assert st.phase == Phase.PENDING and st.ray_job_name == "demo" and st.observed_generation == 1
    assert cond(st, "Accepted").status == "True"


def test_succeeded_with_result_fills_summary_fields() -> None:
    st = step(None, ray_job=rayjob("Complete", "SUCCEEDED", endTime="2026-01-01T00:10:00Z"), result=result())
    assert st.phase == Phase.SUCCEEDED
    assert st.best_metric == "0.9" and st.model_uri == "s3://b/demo/model" and st.result["bestScore"] == 0.9
    assert st.completion_time == "2026-01-01T00:10:00Z"
    assert cond(st, "Succeeded").status == "True"


def test_result_reporting_failure_fails_the_job_with_its_message() -> None:
    st = step(None, ray_job=rayjob("Complete", "SUCCEEDED"), result=result(status="failed"))
    assert st.phase == Phase.FAILED and cond(st, "Succeeded").reason == "TrainingFailed" and "boom" in st.message


def test_unreadable_result_keeps_running_and_says_why() -> None:
    st = step(None, ray_job=rayjob("Complete", "SUCCEEDED"), result_error="s3://x/result.json does not exist (yet)")
    assert st.phase == Phase.RUNNING and "does not exist" in st.message


def test_rayjob_failure_reason_and_message_are_mirrored() -> None:
    st = step(None, ray_job=rayjob("Failed", "", reason="DeadlineExceeded", message="deadline of 60s exceeded"))
    c = cond(st, "Succeeded")
    assert (c.status, c.reason, c.message) == ("False", "DeadlineExceeded", "deadline of 60s exceeded")


def test_terminal_phase_is_sticky_when_the_rayjob_disappears() -> None:
    done = step(None, ray_job=rayjob("Complete", "SUCCEEDED"), result=result())
    again = step(done, t=600, ray_job=None)
    assert again.phase == Phase.SUCCEEDED and again.result == done.result


def test_invalid_spec_fails_with_a_condition_naming_the_field() -> None:
    st = step(None, spec_errors=["spec.resources.workers: 0 must be >= 1"])
    c = cond(st, "Accepted")
    assert st.phase == Phase.FAILED and c.reason == "InvalidSpec" and "spec.resources.workers" in c.message


def test_fixed_spec_leaves_the_invalid_failure() -> None:
    bad = step(None, spec_errors=["spec.x: wrong"])
    assert step(bad, t=5).phase == Phase.PENDING


def test_policy_rejection_is_rejected_phase() -> None:
    st = step(None, rejection=["gpusPerWorker 4 exceeds the limit 1"])
    assert st.phase == Phase.REJECTED and cond(st, "Accepted").reason == "PolicyViolation"


def test_suspend_without_rayjob_status_is_suspended() -> None:
    assert step(None, suspend=True, ray_job=rayjob("", "")).phase == Phase.SUSPENDED


def test_unchanged_condition_keeps_its_transition_time() -> None:
    a = step(None, t=0, ray_job=rayjob("Running", "RUNNING"))
    b = step(a, t=30, ray_job=rayjob("Running", "RUNNING"))
    c = step(b, t=60, ray_job=rayjob("Complete", "FAILED"))
    assert cond(a, "Running").last_transition_time == cond(b, "Running").last_transition_time
    assert cond(c, "Running").last_transition_time != cond(b, "Running").last_transition_time
    assert a.start_time == b.start_time


def test_status_patch_nulls_removed_fields_and_skips_equal_ones() -> None:
    a = step(None, ray_job=rayjob("Running", "RUNNING"))
    b = a.model_copy(update={"message": "x", "dashboard_url": None})
    server = {**a.to_wire(), "dashboardUrl": "http://d:8265"}
    patch = status_patch(server, b)
    assert patch["message"] == "x" and patch["dashboardUrl"] is None and "phase" not in patch


def test_status_patch_writes_defaults_missing_on_the_server() -> None:
    assert status_patch({}, FineTuneJobStatus())["phase"] == "Pending"


# ------------------------------------------------------------------ promotion

SERVED = ServedModel(uri="s3://b/old", metric="eval_accuracy", score=0.85, mode="max", version=2)


def test_if_better_promotes_a_better_model() -> None:
    d = decide_promotion("ifBetter", SERVED, result(0.9))
    assert d.promote and d.decision == "promoted" and "0.9 vs served 0.85" in d.reason


def test_if_better_refuses_a_worse_or_equal_model() -> None:
    assert not decide_promotion("ifBetter", SERVED, result(0.8)).promote
    assert not decide_promotion("ifBetter", SERVED, result(0.85)).promote


def test_if_better_respects_min_mode() -> None:
    served = ServedModel(uri="s3://b/old", metric="eval_loss", score=0.5, mode="min")
    assert decide_promotion("ifBetter", served, result(0.4, metric="eval_loss", mode="min")).promote
    assert not decide_promotion("ifBetter", served, result(0.6, metric="eval_loss", mode="min")).promote


def test_if_better_refuses_a_different_metric() -> None:
    d = decide_promotion("ifBetter", SERVED, result(0.1, metric="eval_loss", mode="min"))
    assert not d.promote and "not comparable" in d.reason


def test_always_promotes_even_a_worse_model() -> None:
    assert decide_promotion("always", SERVED, result(0.1)).promote


def test_manual_only_records() -> None:
    d = decide_promotion("manual", None, result())
    assert not d.promote and d.decision == "recorded" and "s3://b/demo/model" in d.reason


def test_first_model_is_promoted_and_failed_result_never() -> None:
    assert decide_promotion("ifBetter", None, result()).promote
    assert not decide_promotion("always", None, result(status="failed", uri=None)).promote


# ------------------------------------------------------------------ endpoint status

def rayservice(ready: bool, app: str = "RUNNING", gen: int = 2, observed: int = 2, version: str = "3") -> dict[str, Any]:
    return {
        "metadata": {"name": "sentiment", "generation": gen, "annotations": {"graft.dev/model-version": version}},
        "status": {
            "serviceStatus": "Running" if ready else "",
            "numServeEndpoints": 2 if ready else 0,
            "observedGeneration": observed,
            "activeServiceStatus": {"applicationStatuses": {"sentiment": {"status": app}}},
        },
    }


def ep_obs(rs: dict[str, Any] | None, version: int = 3) -> EndpointObservation:
    return EndpointObservation(
        generation=1, model=ServedModel(uri=f"s3://b/v{version}", score=0.9, version=version), application="sentiment",
        url="http://sentiment-serve-svc.ns.svc:8000/", ray_service_name="sentiment", ray_service=rs,
    )


def test_endpoint_ready_when_the_rayservice_serves_the_spec_version() -> None:
    st = compute_endpoint_status(None, ep_obs(rayservice(True)), T0)
    assert (st.phase, st.served_version, st.ready_replicas) == ("Ready", 3, 2)
    assert st.url == "http://sentiment-serve-svc.ns.svc:8000/" and st.history[-1].version == 3


def test_endpoint_updating_while_the_new_version_rolls_out() -> None:
    ready = compute_endpoint_status(None, ep_obs(rayservice(True)), T0)
    rolling = compute_endpoint_status(ready, ep_obs(rayservice(True, gen=3, observed=2, version="4"), version=4), T0)
    assert rolling.phase == "Updating" and rolling.served_version == 3
    assert [h.version for h in rolling.history] == [3, 4]


def test_endpoint_pending_without_rayservice_and_failed_on_deploy_failure() -> None:
    assert compute_endpoint_status(None, ep_obs(None), T0).phase == "Pending"
    assert compute_endpoint_status(None, ep_obs(rayservice(False, app="DEPLOY_FAILED")), T0).phase == "Failed"
    assert compute_endpoint_status(None, ep_obs(rayservice(False, app="DEPLOYING")), T0).phase == "Deploying"
