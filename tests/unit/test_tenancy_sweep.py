"""graft.operator.sweep: which Ray jobs on a shared cluster are orphans (issue 8 item 9)."""

from __future__ import annotations

import pytest

from graft.operator.shared.jobs import META_NAME, META_NAMESPACE, META_UID
from graft.operator.sweep import Owner, orphans

pytestmark = [pytest.mark.unit, pytest.mark.tenancy]


def ray_job(sid: str, status: str = "RUNNING", ns: str = "team-a", name: str = "j", uid: str = "u1") -> dict[str, object]:
    return {"submission_id": sid, "status": status, "metadata": {META_NAMESPACE: ns, META_NAME: name, META_UID: uid}}


def test_running_job_whose_owner_is_gone_is_an_orphan() -> None:
    assert orphans([ray_job("a")], live=set(), watched=None) == ["a"]


def test_job_whose_owner_lives_is_kept() -> None:
    assert orphans([ray_job("a")], live={Owner("team-a", "j", "u1")}, watched=None) == []


def test_a_recreated_owner_with_a_new_uid_does_not_adopt_the_old_job() -> None:
    assert orphans([ray_job("a", uid="old")], live={Owner("team-a", "j", "new")}, watched=None) == ["a"]


def test_finished_jobs_and_jobs_without_graft_metadata_are_left_alone() -> None:
    jobs = [ray_job("done", status="SUCCEEDED"), {"submission_id": "someone-elses", "status": "RUNNING", "metadata": {}}]
    assert orphans(jobs, live=set(), watched=None) == []


def test_jobs_of_namespaces_another_operator_watches_are_left_alone() -> None:
    assert orphans([ray_job("a", ns="team-z")], live=set(), watched={"team-a"}) == []
