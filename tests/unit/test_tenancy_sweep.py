"""graft.operator.sweep: which Ray jobs on a shared cluster are orphans (issue 8 item 9)."""

from __future__ import annotations

import pytest

from graft.operator import kube as k
from graft.operator.settings import OperatorSettings
from graft.operator.shared.jobs import META_NAME, META_NAMESPACE, META_UID
from graft.operator.sweep import (
    ApiConfirm,
    Owner,
    Sweeper,
    clusters_in_use,
    live_apps,
    live_owners,
    orphan_apps,
    orphans,
)
from tests.unit.fake_kube import FakeKube

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


def test_only_clusters_of_admitted_objects_are_ever_swept() -> None:
    settings = OperatorSettings()
    admitted = {"metadata": {"namespace": "team-a", "name": "ok", "uid": "u1"}, "status": {"admitted": {"policies": []}},
                "spec": {"runtime": {"cluster": {"address": "http://ray.team-a.svc:8265"}}}}
    refused = {"metadata": {"namespace": "team-a", "name": "ssrf", "uid": "u2"}, "status": {"phase": "Rejected"},
               "spec": {"runtime": {"cluster": {"address": "http://10.0.0.1:80"}}}}
    serving = {"metadata": {"namespace": "team-a", "name": "ep"}, "status": {"phase": "Ready"},
               "spec": {"cluster": {"name": "shared"}}}
    rejected_ep = {"metadata": {"namespace": "team-a", "name": "bad"}, "status": {"phase": "Rejected"},
                   "spec": {"cluster": {"address": "http://evil.example:80"}}}
    assert clusters_in_use([admitted, refused], [serving, rejected_ep], settings) == {
        "http://ray.team-a.svc:8265", "http://shared-head-svc.team-a.svc:8265"}


def test_live_owners_come_from_the_jobs_metadata() -> None:
    jobs = [{"metadata": {"namespace": "team-a", "name": "j", "uid": "u1"}}, {"metadata": {"name": "broken"}}]
    assert live_owners(jobs) == {Owner("team-a", "j", "u1")}


def test_the_sweeper_remembers_clusters_of_deleted_jobs_and_skips_unreachable_ones() -> None:
    job = {"metadata": {"namespace": "team-a", "name": "j", "uid": "u1"}, "status": {"admitted": {"policies": []}},
           "spec": {"runtime": {"cluster": {"address": "http://127.0.0.1:9"}}}}  # nothing listens on port 9
    sweeper = Sweeper(OperatorSettings(), ["team-a"], interval=60)
    assert sweeper.run([job], [], now=100.0) == []  # unreachable: logged and skipped, never raised
    assert sweeper.known == {"http://127.0.0.1:9"}
    sweeper.run([], [], now=200.0)  # the job is gone: its cluster is still swept
    assert sweeper.known == {"http://127.0.0.1:9"} and not sweeper.due(230.0) and sweeper.due(260.0)


def serve_details(*apps: tuple[str, str, str]) -> dict[str, object]:
    """GET /api/serve/applications/ with declarative apps given as (name, route, import path)."""
    return {"applications": {
        name: {"source": "declarative", "deployed_app_config": {"name": name, "route_prefix": route, "import_path": path}}
        for name, route, path in apps}}


GRAFT_APP = "graft.serving.app:build_app"


def test_a_graft_application_whose_endpoint_is_gone_is_an_orphan() -> None:
    details = serve_details(("team-a.gone", "/team-a/gone", GRAFT_APP), ("team-a.alive", "/team-a/alive", GRAFT_APP))
    assert orphan_apps(details, live={"team-a.alive"}, watched=None) == ["team-a.gone"]


def test_applications_that_are_not_graft_s_are_left_alone() -> None:
    details = serve_details(("platform", "/platform", GRAFT_APP), ("team-a.other", "/team-a/other", "their.app:build"),
                            ("team-a.moved", "/elsewhere", GRAFT_APP))
    assert orphan_apps(details, live=set(), watched=None) == []


def test_applications_of_namespaces_another_operator_watches_are_left_alone() -> None:
    details = serve_details(("team-z.gone", "/team-z/gone", GRAFT_APP))
    assert orphan_apps(details, live=set(), watched={"team-a"}) == []


def test_an_endpoint_keeps_its_application_only_on_the_cluster_it_points_at() -> None:
    endpoints = [{"metadata": {"namespace": "team-a", "name": "ep"}, "spec": {"cluster": {"name": "shared"}}},
                 {"metadata": {"namespace": "team-a", "name": "local"}, "spec": {}}]
    assert live_apps(endpoints, OperatorSettings()) == {"http://shared-head-svc.team-a.svc:8265": {"team-a.ep"}}


def _confirm_with(*objects: tuple[object, dict[str, object]]) -> ApiConfirm:
    kube = FakeKube()
    for kind, obj in objects:
        kube.seed(kind, obj)  # type: ignore[arg-type]
    return ApiConfirm(kube, OperatorSettings())  # type: ignore[arg-type]


def test_the_api_server_confirms_an_owner_the_store_has_not_seen_yet() -> None:
    job = {"apiVersion": "graft.dev/v1alpha1", "kind": "FineTuneJob", "metadata": {"namespace": "team-a", "name": "j"}, "spec": {}}
    confirm = _confirm_with((k.FINETUNEJOBS, job))
    uid = str(confirm.kube.find(k.FINETUNEJOBS, "team-a", "j")["metadata"]["uid"])  # type: ignore[attr-defined]
    assert confirm.job_exists(Owner("team-a", "j", uid))
    assert not confirm.job_exists(Owner("team-a", "j", "an-earlier-uid"))  # re-created: the old job is an orphan
    assert not confirm.job_exists(Owner("team-a", "gone", uid))


def test_the_api_server_confirms_an_application_only_where_its_endpoint_serves_it() -> None:
    ep = {"apiVersion": "graft.dev/v1alpha1", "kind": "ModelEndpoint", "metadata": {"namespace": "team-a", "name": "ep"},
          "spec": {"model": {"uri": "/m"}, "cluster": {"address": "http://ray-a:8265"}}}
    confirm = _confirm_with((k.MODELENDPOINTS, ep))
    assert confirm.app_served("team-a.ep", "http://ray-a:8265")
    assert not confirm.app_served("team-a.ep", "http://ray-b:8265")  # moved to another cluster
    assert not confirm.app_served("team-a.gone", "http://ray-a:8265")
