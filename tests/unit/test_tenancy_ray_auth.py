"""Ray token authentication of Graft's Ray clusters (issue 21, finding 5): every RayJob and RayService
requires a token (KubeRay `authOptions`), the operator creates the token Secret with a token it
re-derives (it never reads a Secret), and its dashboard calls and `graft logs` present it. A
dashboard that requires the token (the fake answers as Ray does: 401 without, 403 wrong) refuses
anyone without it, e.g. a pod of another tenant."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path

import pytest

from graft.cli.main import main
from graft.operator import kube as k
from graft.operator.backends.base import RunObservation, RunState
from graft.operator.backends.rayjob import RayJobBackend, RayServiceBackend
from graft.operator.builders import build_rayjob, build_rayservice
from graft.operator.cache import Store
from graft.operator.rayauth import AUTH_TOKEN_KEY, RayAuthKeyError, cluster_token, derive_token, operator_key
from graft.operator.settings import OperatorSettings
from graft.operator.shared.jobs import ClusterUnavailable, RayJobs
from tests.unit.fake_kube import FakeKube
from tests.unit.fake_ray_dashboard import FakeRayDashboard
from tests.unit.test_cli_logs_stored import NAME, NS, SID, Kubectl, _stored_copy
from tests.unit.test_operator_builders import endpoint, job

pytestmark = [pytest.mark.unit, pytest.mark.tenancy]

KEY = b"k" * 32


@pytest.fixture
def settings(tmp_path: Path) -> OperatorSettings:
    key = tmp_path / "ray-auth-key"
    key.write_bytes(KEY)
    return OperatorSettings(ray_image="example.org/graft-ray:test", ray_auth_key_file=str(key))


@pytest.fixture
def kubectl(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Kubectl:
    k_ = Kubectl(tmp_path / "bin")
    monkeypatch.setenv("PATH", f"{k_.dir}:/usr/bin:/bin")
    monkeypatch.delenv("RAY_AUTH_TOKEN", raising=False)
    return k_


@pytest.fixture
def dashboard() -> Iterator[FakeRayDashboard]:
    with FakeRayDashboard(token="the-right-token") as d:
        yield d


def test_every_rayjob_cluster_requires_a_token_from_the_secret_the_operator_creates(settings: OperatorSettings) -> None:
    spec = build_rayjob(job(), settings)["spec"]["rayClusterSpec"]
    assert spec["authOptions"] == {"mode": "token", "secretName": "demo-ray-auth"}


def test_every_rayservice_cluster_requires_a_token_from_the_secret_the_operator_creates(settings: OperatorSettings) -> None:
    spec = build_rayservice(endpoint(), settings)["spec"]["rayClusterConfig"]
    assert spec["authOptions"] == {"mode": "token", "secretName": "sentiment-ray-auth"}


def test_the_token_secret_is_created_owned_by_the_job_before_its_rayjob(settings: OperatorSettings) -> None:
    kube = FakeKube()
    RayJobBackend(kube, Store(), settings).act(job(), None, None)  # type: ignore[arg-type]  # obs is unused on create
    secret = kube.secrets[("team-a", "demo-ray-auth")]
    assert secret["stringData"] == {AUTH_TOKEN_KEY: derive_token(KEY, "team-a", "demo", "0123456789abcdef")}
    assert secret["metadata"]["ownerReferences"][0]["uid"] == "0123456789abcdef"
    assert kube.find(k.RAYJOBS, "team-a", "demo") is not None


def test_the_token_secret_of_an_endpoint_is_created_with_its_rayservice(settings: OperatorSettings) -> None:
    kube = FakeKube()
    RayServiceBackend(kube, Store(), settings).apply(endpoint())
    secret = kube.secrets[("team-a", "sentiment-ray-auth")]
    assert secret["stringData"] == {AUTH_TOKEN_KEY: derive_token(KEY, "team-a", "sentiment", "feedbeef")}


def test_a_secret_planted_under_the_token_name_is_left_alone_and_never_read(settings: OperatorSettings) -> None:
    kube = FakeKube()
    kube.secrets[("team-a", "demo-ray-auth")] = {"stringData": {AUTH_TOKEN_KEY: "planted"}}
    RayJobBackend(kube, Store(), settings).act(job(), None, None)  # type: ignore[arg-type]
    assert kube.secrets[("team-a", "demo-ray-auth")] == {"stringData": {AUTH_TOKEN_KEY: "planted"}}
    assert kube.calls["create_secret"] == 1 and kube.calls["get"] == 0


def test_tokens_differ_per_object_uid_and_operator_key() -> None:
    base = derive_token(KEY, "team-b", "demo", "uid-1")
    assert base != derive_token(KEY, "team-a", "demo", "uid-1")
    assert base != derive_token(KEY, "team-b", "demo", "uid-2")  # a re-created job of the same name
    assert base != derive_token(b"x" * 32, "team-b", "demo", "uid-1")


def test_a_short_operator_key_is_refused(tmp_path: Path) -> None:
    short = tmp_path / "short"
    short.write_bytes(b"too short")
    with pytest.raises(RayAuthKeyError, match="at least 32"):
        operator_key(str(short))


def test_a_dashboard_call_without_the_token_is_refused(dashboard: FakeRayDashboard) -> None:
    dashboard.add(SID, "SUCCEEDED", logs="team-b's log\n")
    with pytest.raises(ClusterUnavailable, match="HTTP 401"):
        RayJobs(dashboard.url).info(SID)
    with pytest.raises(ClusterUnavailable, match="HTTP 403"):
        RayJobs(dashboard.url, token="a-guess").logs(SID)
    assert dashboard.calls == []


def test_the_operator_copies_a_finished_jobs_log_with_the_token(settings: OperatorSettings, tmp_path: Path) -> None:
    token = cluster_token(settings.ray_auth_key_file, "team-a", "demo", "0123456789abcdef")
    with FakeRayDashboard(token=token) as d:
        d.add(SID, "SUCCEEDED", logs="the driver's log\n")
        run = RunObservation(RunState.SUCCEEDED, submission_id=SID, dashboard_url=d.url)
        RayJobBackend(FakeKube(), Store(), settings)._copy_log(job(), run)
        assert d.refused == [] and d.requests("GET") == [f"/api/jobs/{SID}/logs"]


def test_graft_logs_presents_the_token_from_the_secret_the_user_may_read(
        kubectl: Kubectl, dashboard: FakeRayDashboard, capsys: pytest.CaptureFixture[str]) -> None:
    dashboard.add(SID, "RUNNING", logs="live line\n")
    kubectl.job(phase="Running", jobSubmissionId=SID, dashboardUrl=dashboard.url)
    kubectl.secret(f"{NAME}-ray-auth", {AUTH_TOKEN_KEY: base64.b64encode(b"the-right-token").decode()})
    assert main(["logs", NAME, "-n", NS]) == 0
    assert capsys.readouterr().out == "live line\n"
    assert dashboard.refused == []


def test_graft_logs_without_the_token_is_refused_by_the_dashboard_and_prints_the_copy(
        tmp_path: Path, kubectl: Kubectl, dashboard: FakeRayDashboard, capsys: pytest.CaptureFixture[str]) -> None:
    dashboard.add(SID, "RUNNING", logs="live line\n")
    kubectl.job(phase="Running", jobSubmissionId=SID, dashboardUrl=dashboard.url, logUri=_stored_copy(tmp_path, "copy\n"))
    assert main(["logs", NAME, "-n", NS]) == 0  # the user may not read Secrets: no token
    assert capsys.readouterr().out == "copy\n"
    assert dashboard.refused == [("GET", f"/api/jobs/{SID}", 401)]
