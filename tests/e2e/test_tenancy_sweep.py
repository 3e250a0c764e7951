"""The orphan sweep against a real Ray head: a Graft job whose FineTuneJob is gone is stopped, a
job whose owner lives and a job that is not Graft's keep running (issue 8 item 9)."""

from __future__ import annotations

import sys
from collections.abc import Iterator

import httpx
import pytest

from graft.operator.shared.jobs import META_NAME, META_NAMESPACE, META_UID
from graft.operator.sweep import Owner, sweep_cluster
from tests.e2e.shared_ray import RayHead
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


def test_sweep_stops_only_jobs_whose_owner_is_gone(head: RayHead) -> None:
    graft = {META_NAMESPACE: "team-a", META_NAME: "gone", META_UID: "0123abcd-dead"}
    submit(head, "graft.team-a.gone.0123abcd", graft)
    submit(head, "graft.team-a.alive.4567ef01", {**graft, META_NAME: "alive", META_UID: "4567ef01-live"})
    submit(head, "not-graft", {})
    for sid in ("graft.team-a.gone.0123abcd", "graft.team-a.alive.4567ef01", "not-graft"):
        wait_for(lambda sid=sid: status(head, sid) == "RUNNING", timeout=120, what=f"{sid} running")
    try:
        stopped = sweep_cluster(head.dashboard_url, {Owner("team-a", "alive", "4567ef01-live")}, {"team-a"})
        assert stopped == ["graft.team-a.gone.0123abcd"]
        wait_for(lambda: status(head, "graft.team-a.gone.0123abcd") == "STOPPED", timeout=60, what="the orphan stopped")
        assert status(head, "graft.team-a.alive.4567ef01") == "RUNNING" and status(head, "not-graft") == "RUNNING"
    finally:
        for sid in ("graft.team-a.alive.4567ef01", "not-graft"):
            httpx.post(f"{head.dashboard_url}/api/jobs/{sid}/stop", timeout=10)
