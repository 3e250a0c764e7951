"""Suspend and resume of a FineTuneJob on a shared Ray cluster (graft.operator.backends.shared),
through the backend's public methods, against a fake Ray dashboard over real HTTP: a suspension
stops the Ray job and keeps what the resume needs; a resume submits the next attempt of the same
experiment. Each pass is what the operator's loop does: observe, act, compute the status."""

from __future__ import annotations

import functools
import ssl
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
import yaml

from graft.api.spec import FineTuneJob
from graft.api.status import FineTuneJobStatus, Phase
from graft.operator.backends.base import RunState, Step
from graft.operator.backends.shared import SharedJobBackend, log_uri
from graft.operator.settings import OperatorSettings
from graft.operator.shared.jobs import SPEC_FILE
from graft.operator.shared.naming import submission_id
from graft.operator.status import JobObservation, compute_status
from tests.unit.fake_ray_dashboard import FakeRayDashboard

pytestmark = pytest.mark.unit

NS, NAME, UID = "team-a", "sentiment", "0123456789abcdef"
SID0 = submission_id(NS, NAME, UID, 0)
SID1 = submission_id(NS, NAME, UID, 1)
NOW = datetime(2026, 1, 1, tzinfo=UTC)
SETTINGS = OperatorSettings()


class SharedJob:
    """One FineTuneJob on the fake cluster and the status the operator keeps for it."""

    def __init__(self, dashboard: FakeRayDashboard, storage: Path) -> None:
        self.dashboard = dashboard
        self.storage = storage
        self.backend = SharedJobBackend(SETTINGS)
        self.status: FineTuneJobStatus | None = None
        self.steps: list[Step] = []

    def job(self, suspend: bool) -> FineTuneJob:
        return FineTuneJob.model_validate({
            "metadata": {"name": NAME, "namespace": NS, "uid": UID},
            "spec": {"model": {"source": "/models/m"}, "dataset": {"source": "/data/train.jsonl"},
                     "runtime": {"cluster": {"address": self.dashboard.url}},
                     "checkpoints": {"storage": str(self.storage)}, "suspend": suspend},
        })

    def starts_work(self, suspend: bool) -> bool:
        job = self.job(suspend)
        return self.backend.starts_work(job, self.status, self.backend.observe(job, self.status))

    def reconcile(self, suspend: bool = False) -> Step:
        job = self.job(suspend)
        obs = self.backend.observe(job, self.status)
        step = self.backend.act(job, self.status, obs)
        self.status = compute_status(self.status, JobObservation(1, run=step.obs), NOW, suspend=suspend)
        self.steps.append(step)
        return step

    @property
    def phase(self) -> Phase:
        assert self.status is not None
        return Phase(self.status.phase)

    def running(self) -> None:
        """Submitted and running (attempt 0)."""
        self.reconcile()
        self.dashboard.set_status(SID0, "RUNNING", logs="[graft] trial t1 epoch 1/3\n")
        self.reconcile()
        assert self.phase == Phase.RUNNING

    def suspended(self) -> None:
        self.running()
        self.reconcile(suspend=True)  # asks Ray to stop
        self.reconcile(suspend=True)  # sees it STOPPED
        assert self.phase == Phase.SUSPENDED


TLS = ssl.create_default_context()


@pytest.fixture
def dashboard(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeRayDashboard]:
    for var in ("RAY_ADDRESS", "RAY_API_SERVER_ADDRESS"):  # JobSubmissionClient prefers them to its argument
        monkeypatch.delenv(var, raising=False)
    # httpx builds a TLS context (40 ms) for every top-level call, also for http:// URLs: one for all here
    monkeypatch.setattr(httpx, "request", functools.partial(httpx.request, verify=TLS))
    monkeypatch.setattr(httpx, "stream", functools.partial(httpx.stream, verify=TLS))
    with FakeRayDashboard() as d:
        yield d


@pytest.fixture
def shared(dashboard: FakeRayDashboard, tmp_path: Path) -> SharedJob:
    return SharedJob(dashboard, tmp_path)


def test_suspending_a_running_job_stops_its_ray_job(shared: SharedJob, dashboard: FakeRayDashboard) -> None:
    shared.running()
    assert not shared.starts_work(suspend=True)
    step = shared.reconcile(suspend=True)
    assert dashboard.requests("POST") == ["/api/jobs/", f"/api/jobs/{SID0}/stop"]
    assert [(e.reason, e.type) for e in step.events] == [("Stopping", "Normal")]
    assert step.obs.state == RunState.SUSPENDED and step.obs.reason == "Suspending"
    assert dashboard.jobs[SID0].status == "STOPPED"


def test_a_suspended_job_keeps_its_submission_and_is_polled_no_more(shared: SharedJob, dashboard: FakeRayDashboard) -> None:
    shared.suspended()
    assert shared.status is not None and shared.status.job_submission_id == SID0  # the resume counts attempts from it
    assert shared.status.start_time is not None
    assert shared.status.log_uri is None  # a suspension does not end the job: no log copy stands in for its end
    last = shared.steps[-1]
    assert last.obs.reason == "Suspended" and last.requeue_after is None
    assert dashboard.requests("POST") == ["/api/jobs/", f"/api/jobs/{SID0}/stop"]  # stopped once


def test_resuming_submits_the_next_attempt_of_the_same_experiment(shared: SharedJob, dashboard: FakeRayDashboard) -> None:
    shared.suspended()
    assert shared.starts_work(suspend=False)
    step = shared.reconcile(suspend=False)
    assert [e.reason for e in step.events] == ["Submitted"] and SID1 in step.events[0].message
    assert shared.phase == Phase.PENDING
    assert shared.status is not None and shared.status.job_submission_id == SID1
    first, again = dashboard.jobs[SID0], dashboard.jobs[SID1]
    # The same spec, result and job directory: graft.jobs finds the earlier attempt's experiment and resumes it.
    assert again.files[SPEC_FILE] == first.files[SPEC_FILE]
    assert again.entrypoint == first.entrypoint
    assert again.metadata == first.metadata and again.metadata["graft.dev/uid"] == UID
    spec = yaml.safe_load(again.files[SPEC_FILE])
    assert spec["metadata"]["uid"] == UID and spec["spec"]["checkpoints"]["storage"] == str(shared.storage)


def test_the_resumed_attempt_is_followed_until_it_runs(shared: SharedJob, dashboard: FakeRayDashboard) -> None:
    shared.suspended()
    shared.reconcile(suspend=False)
    dashboard.set_status(SID1, "RUNNING")
    step = shared.reconcile(suspend=False)
    assert shared.phase == Phase.RUNNING and step.obs.submission_id == SID1
    assert dashboard.requests("POST", "/api/jobs/") == ["/api/jobs/", f"/api/jobs/{SID0}/stop", "/api/jobs/"]  # no more submits


def test_each_resume_after_another_suspension_is_a_new_attempt(shared: SharedJob, dashboard: FakeRayDashboard) -> None:
    shared.suspended()
    shared.reconcile(suspend=False)
    dashboard.set_status(SID1, "RUNNING")
    shared.reconcile(suspend=False)
    shared.reconcile(suspend=True)
    shared.reconcile(suspend=True)
    assert shared.phase == Phase.SUSPENDED and dashboard.jobs[SID1].status == "STOPPED"
    shared.reconcile(suspend=False)
    assert shared.status is not None and shared.status.job_submission_id == submission_id(NS, NAME, UID, 2)
    assert sorted(dashboard.jobs) == [SID0, SID1, submission_id(NS, NAME, UID, 2)]


def test_a_resume_while_the_stop_is_under_way_waits_for_the_ray_job_to_stop(shared: SharedJob, dashboard: FakeRayDashboard) -> None:
    dashboard.slow_stop = True
    shared.running()
    shared.reconcile(suspend=True)
    assert dashboard.jobs[SID0].stop_requested and dashboard.jobs[SID0].status == "RUNNING"
    step = shared.reconcile(suspend=False)
    assert shared.phase == Phase.SUSPENDED and step.events == [] and SID1 not in dashboard.jobs  # not read as a failure
    assert step.requeue_after == SETTINGS.shared_poll_seconds
    dashboard.finish_stop(SID0)
    shared.reconcile(suspend=False)
    assert shared.status is not None and shared.status.job_submission_id == SID1 and SID1 in dashboard.jobs


def test_a_job_suspended_before_it_started_running_is_stopped_too(shared: SharedJob, dashboard: FakeRayDashboard) -> None:
    shared.reconcile()
    assert dashboard.jobs[SID0].status == "PENDING"
    shared.reconcile(suspend=True)
    assert dashboard.requests("POST") == ["/api/jobs/", f"/api/jobs/{SID0}/stop"]
    shared.reconcile(suspend=True)
    assert shared.phase == Phase.SUSPENDED


def test_a_job_that_already_succeeded_is_not_stopped_by_a_late_suspend(shared: SharedJob, dashboard: FakeRayDashboard) -> None:
    shared.running()
    dashboard.set_status(SID0, "SUCCEEDED", logs="[graft] done\n")
    step = shared.reconcile(suspend=True)
    assert step.obs.state == RunState.SUCCEEDED
    assert f"/api/jobs/{SID0}/stop" not in dashboard.requests("POST")


def test_after_a_resume_the_log_copy_is_the_final_attempts_log(shared: SharedJob, dashboard: FakeRayDashboard) -> None:
    shared.suspended()
    shared.reconcile(suspend=False)
    dashboard.set_status(SID1, "RUNNING")
    shared.reconcile(suspend=False)
    dashboard.set_status(SID1, "SUCCEEDED", logs="[graft] resumed\n[graft] job succeeded\n")
    step = shared.reconcile(suspend=False)
    uri = log_uri(shared.job(False), SETTINGS)
    assert uri is not None and step.obs.log_uri == uri
    assert Path(uri).read_text() == "[graft] resumed\n[graft] job succeeded\n"


def test_deleting_a_resumed_job_stops_and_forgets_every_attempt(shared: SharedJob, dashboard: FakeRayDashboard) -> None:
    shared.suspended()
    shared.reconcile(suspend=False)
    dashboard.set_status(SID1, "RUNNING")
    shared.reconcile(suspend=False)
    job = shared.job(False)
    passes = [shared.backend.cleanup(job, shared.status) for _ in range(3)]
    assert passes == [False, False, True]  # delete attempt 0 and stop attempt 1; delete attempt 1; nothing left
    assert dashboard.jobs == {}
    assert dashboard.requests("POST", f"/api/jobs/{SID1}/stop") == [f"/api/jobs/{SID1}/stop"]
