"""compute_status / compute_endpoint_status: pure status logic, fed by the KubeRay backends' observations."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from graft.api import FineTuneJobStatus, TrainingResult
from graft.api.endpoint import ServedModel
from graft.api.result import TrialRecord
from graft.api.status import Admitted, Phase, Progress
from graft.operator.backends.base import RunObservation, RunState
from graft.operator.backends.rayjob import observe_rayjob, observe_rayservice
from graft.operator.status import JobObservation, Refusal, compute_endpoint_status, compute_status, status_patch

pytestmark = pytest.mark.unit

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def rayjob(deploy: str = "", job: str = "", suspend: bool = False, **status: Any) -> dict[str, Any]:
    return {"metadata": {"name": "demo"}, "spec": {"suspend": suspend},
            "status": {"jobDeploymentStatus": deploy, "jobStatus": job, **status}}


def result(score: float | None = 0.9, status: str = "succeeded", metric: str = "eval_accuracy", mode: str = "max",
           uri: str | None = "s3://b/demo/model") -> TrainingResult:
    return TrainingResult(job_name="demo", status=status, metric=metric, mode=mode, best_score=score, best_trial_id="t1",
                          model_uri=uri, started_at="a", finished_at="b", message="boom" if status == "failed" else "")


def step(prev: FineTuneJobStatus | None, t: int = 0, ray_job: dict[str, Any] | None = None, suspend: bool = False,
         queue: str | None = None, **obs: Any) -> FineTuneJobStatus:
    run = observe_rayjob(ray_job, suspend, queue) if ray_job is not None or "refusal" not in obs else None
    return compute_status(prev, JobObservation(generation=1, run=run, **obs), T0 + timedelta(seconds=t), suspend=suspend)


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


def test_no_rayjob_yet_is_pending_and_accepted() -> None:
    st = step(None)
    assert st.phase == Phase.PENDING and st.observed_generation == 1
    assert cond(st, "Accepted").status == "True"


def test_the_rayjob_name_is_recorded_from_the_child() -> None:
    assert step(None, ray_job=rayjob("Initializing")).ray_job_name == "demo"


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


def test_a_job_that_exited_on_a_storage_failure_fails_with_the_results_reason_and_message() -> None:
    failed = result(status="failed").model_copy(update={"reason": "StorageFailed", "message": "storage s3://b/root failed: AWS Error NETWORK_CONNECTION"})
    st = step(None, ray_job=rayjob("Failed", "FAILED", reason="AppFailed", message="Job entrypoint command failed"), result=failed)
    c = cond(st, "Succeeded")
    assert (st.phase, c.status, c.reason) == (Phase.FAILED, "False", "StorageFailed")
    assert "s3://b/root" in c.message and st.message == c.message


def test_a_rayjob_that_failed_for_its_own_reason_keeps_it_over_a_failed_result() -> None:
    failed = result(status="failed").model_copy(update={"reason": "StorageFailed"})
    st = step(None, ray_job=rayjob("Failed", "", reason="DeadlineExceeded", message="deadline of 60s exceeded"), result=failed)
    assert (cond(st, "Succeeded").reason, st.message) == ("DeadlineExceeded", "deadline of 60s exceeded")


def test_terminal_phase_is_sticky_when_the_rayjob_disappears() -> None:
    done = step(None, ray_job=rayjob("Complete", "SUCCEEDED"), result=result())
    again = step(done, t=600, ray_job=None)
    assert again.phase == Phase.SUCCEEDED and again.result == done.result and again.completion_time == done.completion_time


def test_invalid_spec_fails_with_a_condition_naming_the_field() -> None:
    st = step(None, refusal=Refusal("InvalidSpec", ["spec.resources.workers: 0 must be >= 1"]))
    c = cond(st, "Accepted")
    assert st.phase == Phase.FAILED and c.reason == "InvalidSpec" and "spec.resources.workers" in c.message
    assert cond(st, "Succeeded").status == "False"  # `kubectl wait --for=condition=Succeeded=False` ends


def test_policy_rejection_is_rejected_phase() -> None:
    st = step(None, refusal=Refusal("PolicyViolation", ["gpusPerWorker 4 exceeds the limit 1"]))
    assert st.phase == Phase.REJECTED and cond(st, "Accepted").reason == "PolicyViolation"


def test_a_capacity_limit_waits_pending_instead_of_rejecting() -> None:
    st = step(None, refusal=Refusal("PolicyViolation", ["already 1 unfinished"], retryable=True))
    assert st.phase == Phase.PENDING and st.message.startswith("waiting:") and cond(st, "Accepted").status == "False"


def test_unreachable_storage_fails_with_storage_required() -> None:
    st = step(None, refusal=Refusal("StorageRequired", ["spec.checkpoints.storage: '/tmp/x' is a local path"]))
    assert st.phase == Phase.FAILED and cond(st, "Accepted").reason == "StorageRequired" and "/tmp/x" in st.message


def test_suspend_without_rayjob_status_is_suspended() -> None:
    assert step(None, suspend=True, ray_job=rayjob("", "", suspend=True)).phase == Phase.SUSPENDED


def test_a_rayjob_held_by_kueue_is_pending_queued_not_suspended() -> None:
    st = step(None, queue="team-a", ray_job=rayjob("Suspended", "", suspend=True))
    assert st.phase == Phase.PENDING and cond(st, "Running").reason == "QueuedByKueue" and "team-a" in st.message


def test_the_admitted_record_is_kept_in_status() -> None:
    admitted = Admitted(queue_name="q", image="img:1", policies=["p"], defaults_from={"queueName": "p"})
    st = step(None, admitted=admitted)
    again = step(st, t=30, ray_job=rayjob("Running", "RUNNING"))
    assert again.admitted == admitted


def test_live_progress_while_running_sets_best_so_far() -> None:
    progress = Progress(trials="1/4 (2 running)", trials_total=4, trials_running=2, trials_completed=1,
                        best_score=0.81, best_trial="t2", epoch=2, epochs=3, eta_seconds=90)
    st = step(None, metric="eval_accuracy", ray_job=rayjob("Running", "RUNNING"), progress=progress)
    assert st.progress == progress and (st.metric, st.best_metric, st.best_trial) == ("eval_accuracy", "0.81", "t2")


def test_progress_stops_counting_running_trials_when_the_job_ends() -> None:
    progress = Progress(trials="3/4 (1 running)", trials_total=4, trials_running=1, eta_seconds=30, epoch=1, epochs=3)
    running = step(None, ray_job=rayjob("Running", "RUNNING"), progress=progress)
    done = step(running, t=60, ray_job=rayjob("Complete", "SUCCEEDED"), result=result())
    assert done.progress is not None and done.progress.trials_running == 0 and done.progress.eta_seconds is None


def test_a_finished_jobs_trial_count_comes_from_its_result_not_the_last_live_snapshot() -> None:
    progress = Progress(trials="1/2 (1 running)", trials_total=2, trials_running=1, trials_completed=1)
    running = step(None, ray_job=rayjob("Running", "RUNNING"), progress=progress)
    trials = [TrialRecord(trial_id="t1", status="completed", config={}, epochs_completed=3),
              TrialRecord(trial_id="t2", status="stopped_early", config={}, epochs_completed=1)]
    done = step(running, t=60, ray_job=rayjob("Complete", "SUCCEEDED"), result=result().model_copy(update={"trials": trials}))
    assert done.progress is not None
    assert (done.progress.trials, done.progress.trials_completed, done.progress.trials_stopped) == ("2/2", 1, 1)


def test_a_failed_job_without_a_result_keeps_its_finished_trial_count() -> None:
    progress = Progress(trials="1/3 (1 running)", trials_total=3, trials_running=1, trials_completed=1)
    running = step(None, ray_job=rayjob("Running", "RUNNING"), progress=progress)
    failed = step(running, t=60, ray_job=rayjob("Failed", "FAILED"))
    assert failed.progress is not None and failed.progress.trials == "1/3"


def test_shared_cluster_observation_maps_like_a_rayjob() -> None:
    run = RunObservation(RunState.RUNNING, "JobRunning", "the Ray job is running", submission_id="graft.ns.a.1234")
    st = compute_status(None, JobObservation(generation=1, run=run), T0)
    assert st.phase == Phase.RUNNING and st.job_submission_id == "graft.ns.a.1234" and st.ray_job_name is None


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


def endpoint_status(prev: Any, rs: dict[str, Any] | None, version: int = 3) -> Any:
    model = ServedModel(uri=f"s3://b/v{version}", score=0.9, version=version)
    obs = observe_rayservice(rs, "sentiment", "http://sentiment-serve-svc.ns.svc:8000/")
    return compute_endpoint_status(prev, model, obs, T0, generation=1)


def test_endpoint_ready_when_the_rayservice_serves_the_spec_version() -> None:
    st = endpoint_status(None, rayservice(True))
    assert (st.phase, st.served_version, st.ready_replicas) == ("Ready", 3, 2)
    assert st.url == "http://sentiment-serve-svc.ns.svc:8000/" and st.history[-1].version == 3


def test_endpoint_updating_while_the_new_version_rolls_out() -> None:
    ready = endpoint_status(None, rayservice(True))
    rolling = endpoint_status(ready, rayservice(True, gen=3, observed=2, version="4"), version=4)
    assert rolling.phase == "Updating" and rolling.served_version == 3
    assert [h.version for h in rolling.history] == [3, 4]


def test_endpoint_pending_without_rayservice_and_failed_on_deploy_failure() -> None:
    assert endpoint_status(None, None).phase == "Pending"
    assert endpoint_status(None, rayservice(False, app="DEPLOY_FAILED")).phase == "Failed"
    assert endpoint_status(None, rayservice(False, app="DEPLOYING")).phase == "Deploying"
