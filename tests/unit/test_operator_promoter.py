"""promote(): the ModelEndpoint update of a succeeded job, applied once even when the operator dies
between the update and the job's status write (the promotion ledger on the endpoint)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from graft.api import FineTuneJob, TrainingResult
from graft.operator import kube as k
from graft.operator.builders.endpoint import PROMOTIONS_ANNOTATION, PROMOTIONS_KEPT, promotions
from graft.operator.cache import Store
from graft.operator.promoter import promote
from tests.unit.fake_kube import FakeKube

pytestmark = pytest.mark.unit

NS, EP = "team-a", "sentiment"


def job(name: str, promotion: str = "always") -> FineTuneJob:
    return FineTuneJob.model_validate({
        "metadata": {"name": name, "namespace": NS, "uid": f"{name}-0000-4000-8000-000000000000"},
        "spec": {"model": {"source": "/models/m"}, "dataset": {"source": "/data/d.csv"},
                 "serving": {"endpoint": EP, "promotion": promotion}},
    })


def result(name: str, score: float = 0.9) -> TrainingResult:
    return TrainingResult(job_name=name, status="succeeded", metric="eval_accuracy", mode="max", best_score=score,
                          model_uri=f"/storage/{name}/model", started_at="a", finished_at="b")


def endpoint(kube: FakeKube) -> dict[str, Any]:
    obj = kube.find(k.MODELENDPOINTS, NS, EP)
    assert obj is not None
    return obj


def run(kube: FakeKube, name: str, score: float = 0.9) -> str:
    """One reconcile's promotion with a store as the watch would have filled it; the decision's reason."""
    store = Store()
    for obj in kube.all(k.MODELENDPOINTS):
        store.put(k.MODELENDPOINTS, obj)
    record, _ = promote(kube, store, job(name), result(name, score), "http://ep")  # type: ignore[arg-type]
    assert record is not None
    return f"{record.decision}: {record.reason}"


def test_a_new_endpoint_records_the_promotion_that_created_it() -> None:
    kube = FakeKube()
    run(kube, "first")
    assert [(e["job"], e["version"]) for e in promotions(endpoint(kube))] == [("first", 1)]


def test_each_promotion_bumps_the_version_and_joins_the_ledger() -> None:
    kube = FakeKube()
    run(kube, "first")
    run(kube, "second")
    assert endpoint(kube)["spec"]["model"]["version"] == 2
    assert [(e["job"], e["version"]) for e in promotions(endpoint(kube))] == [("first", 1), ("second", 2)]


def test_a_promotion_the_jobs_status_did_not_record_is_not_applied_again_after_a_later_one() -> None:
    """first promoted (version 2), the operator died before first's status said so, second promoted
    (version 3); first's next reconcile finds itself in the ledger and changes nothing."""
    kube = FakeKube()
    run(kube, "zero")
    run(kube, "first")
    run(kube, "second")
    before = endpoint(kube)
    assert run(kube, "first") == "promoted: promoted as version 2; the endpoint now serves version 3"
    after = endpoint(kube)
    assert after["metadata"]["resourceVersion"] == before["metadata"]["resourceVersion"]
    assert after["spec"]["model"]["sourceJob"] == "second"


def test_the_ledger_keeps_the_newest_promotions_only() -> None:
    kube = FakeKube()
    for i in range(PROMOTIONS_KEPT + 3):
        run(kube, f"job-{i}")
    ledger = promotions(endpoint(kube))
    assert len(ledger) == PROMOTIONS_KEPT and ledger[-1]["version"] == PROMOTIONS_KEPT + 3


def test_an_endpoint_with_an_unreadable_ledger_is_still_promoted_into() -> None:
    kube = FakeKube()
    run(kube, "first")
    kube.patch(k.MODELENDPOINTS, NS, EP, {"metadata": {"annotations": {PROMOTIONS_ANNOTATION: "not json"}}})
    run(kube, "second")
    assert endpoint(kube)["spec"]["model"]["version"] == 2
    assert json.loads(endpoint(kube)["metadata"]["annotations"][PROMOTIONS_ANNOTATION])[-1]["job"] == "second"
