"""The orphan sweep against a real Ray head: a Graft job whose FineTuneJob is gone is stopped, a
job whose owner lives and a job that is not Graft's keep running; a Graft Serve application whose
ModelEndpoint is gone is removed, the others keep serving (issue 8 item 9)."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from graft.api.endpoint import ModelEndpoint
from graft.operator.settings import OperatorSettings
from graft.operator.shared.jobs import META_NAME, META_NAMESPACE, META_UID
from graft.operator.shared.serve import ServeApi, build_application
from graft.operator.sweep import Owner, TrustTheStore, sweep_cluster, sweep_serve
from testbed.ray_head import RayHead
from tests.integration.helpers import wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.tenancy]


@pytest.fixture(scope="module")
def head() -> Iterator[RayHead]:
    h = RayHead(num_cpus=2).start()
    yield h
    h.stop()


def submit(head: RayHead, sid: str, metadata: dict[str, str]) -> None:
    from ray.job_submission import JobSubmissionClient

    JobSubmissionClient(head.dashboard_url).submit_job(
        entrypoint=f"{sys.executable} -c 'import time; time.sleep(600)'", submission_id=sid, metadata=metadata,
        entrypoint_num_cpus=0,
    )


def status(head: RayHead, sid: str) -> str:
    return str(httpx.get(f"{head.dashboard_url}/api/jobs/{sid}", timeout=10).json()["status"])


class ApiServerKnows(TrustTheStore):
    """The API server's answer where the operator's store lags (just restarted): `late` exists."""

    def job_exists(self, owner: Owner) -> bool:
        return owner == Owner("team-a", "late", "89abcdef-late")


def test_sweep_stops_only_jobs_whose_owner_is_gone(head: RayHead) -> None:
    graft = {META_NAMESPACE: "team-a", META_NAME: "gone", META_UID: "0123abcd-dead"}
    submit(head, "graft.team-a.gone.0123abcd", graft)
    submit(head, "graft.team-a.alive.4567ef01", {**graft, META_NAME: "alive", META_UID: "4567ef01-live"})
    submit(head, "graft.team-a.late.89abcdef", {**graft, META_NAME: "late", META_UID: "89abcdef-late"})
    submit(head, "not-graft", {})
    kept = ("graft.team-a.alive.4567ef01", "graft.team-a.late.89abcdef", "not-graft")
    for sid in ("graft.team-a.gone.0123abcd", *kept):
        wait_for(lambda sid=sid: status(head, sid) == "RUNNING", timeout=120, what=f"{sid} running")
    try:
        stopped = sweep_cluster(head.dashboard_url, {Owner("team-a", "alive", "4567ef01-live")}, {"team-a"}, ApiServerKnows())
        assert stopped == ["graft.team-a.gone.0123abcd"]
        wait_for(lambda: status(head, "graft.team-a.gone.0123abcd") == "STOPPED", timeout=60, what="the orphan stopped")
        assert all(status(head, sid) == "RUNNING" for sid in kept)
    finally:
        for sid in kept:
            httpx.post(f"{head.dashboard_url}/api/jobs/{sid}/stop", timeout=10)


def deploy(head: RayHead, model: Path, namespace: str, name: str) -> None:
    """Deploy a ModelEndpoint's Serve application the way the operator does (build_application)."""
    endpoint = ModelEndpoint.model_validate({
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"model": {"uri": model.as_uri()}, "cluster": {"address": head.dashboard_url},
                 "serving": {"minReplicas": 1, "maxReplicas": 1, "resources": {"cpus": 0.25}}},
    })
    ServeApi(head.dashboard_url).apply(build_application(endpoint, OperatorSettings()), head.serve_port)


def app_statuses(head: RayHead) -> dict[str, str]:
    apps = ServeApi(head.dashboard_url).details().get("applications") or {}
    return {name: str(app.get("status")) for name, app in apps.items()}


def test_sweep_removes_only_the_serve_application_whose_endpoint_is_gone(head: RayHead, untrained_classifier: Path) -> None:
    for ns, name in (("team-a", "gone"), ("team-a", "alive"), ("team-z", "gone")):
        deploy(head, untrained_classifier, ns, name)
    every = {"team-a.gone", "team-a.alive", "team-z.gone"}
    wait_for(lambda: {n for n, s in app_statuses(head).items() if s == "RUNNING"} >= every, timeout=300,
             what=lambda: f"three Serve applications RUNNING (now {app_statuses(head)})")

    removed = sweep_serve(head.dashboard_url, live={"team-a.alive"}, watched={"team-a"})

    assert removed == ["team-a.gone"]
    wait_for(lambda: "team-a.gone" not in app_statuses(head), timeout=120, what="the orphaned application removed")
    left = app_statuses(head)
    assert left.get("team-a.alive") == "RUNNING" and left.get("team-z.gone") == "RUNNING", left
