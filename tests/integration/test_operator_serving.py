"""Promotion into a ModelEndpoint and its RayService on a real control plane."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from testbed.operator import OperatorProcess
from tests.integration.helpers import (
    FTJ,
    MEP,
    RJ,
    RS,
    apply,
    finetunejob,
    get,
    patch_status,
    phase_is,
    set_rayjob_status,
    status,
    wait_for,
    write_result,
)

pytestmark = pytest.mark.integration



def finish(op: OperatorProcess, ns: str, storage: str, name: str, score: float) -> str:
    """Run a job to Succeeded with `score`; returns its model URI."""
    cp = op.cp
    apply(cp, finetunejob(name, storage=storage, serving={"endpoint": "sentiment", "promotion": "ifBetter"}), ns)
    wait_for(lambda: get(cp, RJ, name, ns), what=f"RayJob {name}")
    uid = get(cp, FTJ, name, ns)["metadata"]["uid"]  # type: ignore[index]
    model = write_result(storage, ns, name, uid, score=score)
    set_rayjob_status(cp, name, ns, "Complete", "SUCCEEDED")
    wait_for(lambda: status(cp, FTJ, name, ns).get("promotion"), what=f"promotion decision of {name}")
    return model


def served_args(op: OperatorProcess, ns: str) -> dict:
    rs = get(op.cp, RS, "sentiment", ns)
    assert rs is not None
    return yaml.safe_load(rs["spec"]["serveConfigV2"])["applications"][0]["args"]


def test_if_better_promotes_a_better_model_and_refuses_a_worse_one(
    operator: OperatorProcess, namespace: str, tmp_path: Path
) -> None:
    cp, ns, storage = operator.cp, namespace, str(tmp_path / namespace / "s")
    first = finish(operator, ns, storage, "v1", 0.80)
    wait_for(lambda: get(cp, RS, "sentiment", ns), what="RayService")
    assert served_args(operator, ns)["modelUri"] == first and served_args(operator, ns)["modelVersion"] == 1
    rs = get(cp, RS, "sentiment", ns)
    assert rs["metadata"]["ownerReferences"][0]["kind"] == "ModelEndpoint"  # type: ignore[index]

    better = finish(operator, ns, storage, "v2", 0.90)
    assert status(cp, FTJ, "v2", ns)["promotion"]["decision"] == "promoted"
    wait_for(lambda: served_args(operator, ns)["modelUri"] == better, what="serveConfigV2 updated to v2")
    assert served_args(operator, ns)["modelVersion"] == 2

    finish(operator, ns, storage, "v3", 0.70)
    promo = status(cp, FTJ, "v3", ns)["promotion"]
    assert promo["decision"] == "refused" and "not better" in promo["reason"]
    ep = get(cp, MEP, "sentiment", ns)
    assert ep["spec"]["model"]["uri"] == better and ep["spec"]["model"]["version"] == 2  # type: ignore[index]
    assert served_args(operator, ns)["modelUri"] == better


def test_endpoint_status_mirrors_the_rayservice(operator: OperatorProcess, namespace: str, tmp_path: Path) -> None:
    cp, ns = operator.cp, namespace
    finish(operator, ns, str(tmp_path / namespace / "s"), "m1", 0.8)
    wait_for(lambda: get(cp, RS, "sentiment", ns), what="RayService")
    wait_for(phase_is(cp, MEP, "sentiment", ns, "Deploying") , what="Deploying")
    gen = get(cp, RS, "sentiment", ns)["metadata"]["generation"]  # type: ignore[index]
    patch_status(cp, RS, "sentiment", ns, {
        "serviceStatus": "Running", "numServeEndpoints": 2, "observedGeneration": gen,
        "conditions": [{"type": "Ready", "status": "True", "reason": "NonZeroServeEndpoints", "message": "",
                        "lastTransitionTime": "2026-01-01T00:00:00Z"}],
        "activeServiceStatus": {"applicationStatuses": {"sentiment": {"status": "RUNNING"}}},
    })
    wait_for(phase_is(cp, MEP, "sentiment", ns, "Ready"), what="Ready")
    ready = cp.kubectl("wait", "--for=condition=Ready", f"{MEP}/sentiment", "-n", ns, "--timeout=30s", check=False)
    assert ready.returncode == 0, ready.stderr
    st = status(cp, MEP, "sentiment", ns)
    assert st["url"] == f"http://sentiment-serve-svc.{ns}.svc:8000/"
    assert (st["readyReplicas"], st["servedVersion"]) == (2, 1)
    assert [h["version"] for h in st["history"]] == [1]
    assert status(cp, FTJ, "m1", ns)["endpoint"] == st["url"]


def test_manual_promotion_only_records_the_candidate(operator: OperatorProcess, namespace: str, tmp_path: Path) -> None:
    cp, ns, storage = operator.cp, namespace, str(tmp_path / namespace / "s")
    apply(cp, finetunejob("man", storage=storage, serving={"endpoint": "by-hand", "promotion": "manual"}), ns)
    wait_for(lambda: get(cp, RJ, "man", ns), what="RayJob man")
    model = write_result(storage, namespace, "man", get(cp, FTJ, "man", ns)["metadata"]["uid"], score=0.99)  # type: ignore[index]
    set_rayjob_status(cp, "man", ns, "Complete", "SUCCEEDED")
    promo = wait_for(lambda: status(cp, FTJ, "man", ns).get("promotion"), what="promotion decision")
    assert promo["decision"] == "recorded" and model in promo["reason"]
    assert get(cp, MEP, "by-hand", ns) is None


def test_deleting_the_endpoint_removes_its_rayservice(operator: OperatorProcess, namespace: str, tmp_path: Path) -> None:
    cp, ns = operator.cp, namespace
    finish(operator, ns, str(tmp_path / namespace / "s"), "d1", 0.8)
    wait_for(lambda: get(cp, RS, "sentiment", ns), what="RayService")
    cp.kubectl("delete", MEP, "sentiment", "-n", ns, "--wait=false")
    wait_for(lambda: get(cp, RS, "sentiment", ns) is None, timeout=180, what="garbage collection of the RayService")
    assert status(cp, FTJ, "d1", ns)["phase"] == "Succeeded"
