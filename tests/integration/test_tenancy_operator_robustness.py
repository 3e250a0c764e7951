"""One tenant's object never degrades the operator (issue 21, finding 8), against the real API server:
a result too large for a Kubernetes object (thousands of long label names made every status write
fail, retried forever) gets a bounded status that says what it left out; a storage scheme Graft
cannot write (gs:// with ttlSecondsAfterFinished 0 ended a worker at the TTL cleanup) is refused
before any pod."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from graft.api.status import STATUS_BUDGET_BYTES
from graft.operator.result import result_uri
from testbed.operator import OperatorProcess
from tests.integration.helpers import (
    FTJ,
    RJ,
    apply,
    condition,
    finetunejob,
    get,
    names,
    phase_is,
    set_rayjob_status,
    status,
    wait_for,
    write_result,
)

pytestmark = [pytest.mark.integration, pytest.mark.tenancy]


def test_a_result_with_thousands_of_long_labels_still_gets_a_status_written(operator: OperatorProcess, namespace: str,
                                                                            tmp_path: Path) -> None:
    cp, storage = operator.cp, str(tmp_path / namespace / "storage")
    apply(cp, finetunejob("big", storage=storage, serving={"enabled": False}), namespace)
    wait_for(lambda: get(cp, RJ, "big", namespace), timeout=60, what="the RayJob")
    obj = get(cp, FTJ, "big", namespace)
    assert obj is not None
    uid = obj["metadata"]["uid"]
    write_result(storage, namespace, "big", uid, score=0.5)
    path = Path(str(result_uri(storage, namespace, "big", uid)))
    doc = json.loads(path.read_text())
    doc["labelNames"] = [f"{i}-" + "x" * 1000 for i in range(5000)]  # 5 MB: the reader takes it, etcd would not
    path.write_text(json.dumps(doc))
    set_rayjob_status(cp, "big", namespace, "Complete", "SUCCEEDED")
    wait_for(phase_is(cp, FTJ, "big", namespace, "Succeeded"), timeout=60, what="Succeeded with a bounded status")
    st = status(cp, FTJ, "big", namespace)
    assert len(json.dumps(st)) < STATUS_BUDGET_BYTES and len(st["result"]["labelNames"]) == 100
    assert any(n.startswith("result.labelNames: 4900 of 5000 items left out") for n in st["omitted"])


def test_a_storage_scheme_graft_cannot_write_is_refused_before_any_pod(operator: OperatorProcess, namespace: str) -> None:
    cp = operator.cp
    apply(cp, finetunejob("gs", storage="gs://x/", runtime={"ttlSecondsAfterFinished": 0}), namespace)
    wait_for(phase_is(cp, FTJ, "gs", namespace, "Failed"), timeout=60, what="Failed")
    st = status(cp, FTJ, "gs", namespace)
    assert condition(st, "Accepted")["reason"] == "StorageRequired" and "use s3://BUCKET/PATH" in st["message"]
    assert "spec.checkpoints.storage" in st["message"] and names(cp, RJ, namespace) == []
