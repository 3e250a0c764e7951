"""The CRDs are generated from the models, structural, and the committed copy never drifts."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from graft.api.crd import CRDS, build_crd, render_crds

pytestmark = pytest.mark.unit

COMMITTED = Path(__file__).resolve().parents[2] / "charts" / "graft" / "crds" / "graft.dev.yaml"


def walk(node: Any, path: str = "") -> list[tuple[str, dict[str, Any]]]:
    found: list[tuple[str, dict[str, Any]]] = []
    if isinstance(node, dict):
        found.append((path, node))
        for key, value in node.get("properties", {}).items():
            found += walk(value, f"{path}.{key}")
        if isinstance(node.get("items"), dict):
            found += walk(node["items"], f"{path}[]")
        if isinstance(node.get("additionalProperties"), dict):
            found += walk(node["additionalProperties"], f"{path}{{}}")
    return found


def schema_of(kind: str) -> dict[str, Any]:
    info = next(c for c in CRDS if c.kind == kind)
    return build_crd(info)["spec"]["versions"][0]["schema"]["openAPIV3Schema"]


def test_committed_crds_match_the_models() -> None:
    assert COMMITTED.read_text() == render_crds(), "CRDs drifted from graft/api: run `make crds` and commit"


@pytest.mark.parametrize("kind", ["FineTuneJob", "ModelEndpoint"])
def test_schema_is_structural(kind: str) -> None:
    for path, node in walk(schema_of(kind)):
        assert "$ref" not in node and "anyOf" not in node and "oneOf" not in node, path
        assert node.get("additionalProperties") is not False, path
        assert "type" in node or node.get("x-kubernetes-preserve-unknown-fields"), f"{path} has no type"


def test_finetunejob_has_short_name_status_and_printer_columns() -> None:
    crd = build_crd(CRDS[0])
    version = crd["spec"]["versions"][0]
    assert crd["spec"]["names"]["shortNames"] == ["ftj"]
    assert version["subresources"] == {"status": {}}
    columns = [c["name"] for c in version["additionalPrinterColumns"]]
    assert columns == ["Phase", "Trials", "Metric", "Best", "ETA-Seconds", "Endpoint", "Age"]


def test_every_spec_field_but_suspend_is_immutable_by_a_cel_transition_rule() -> None:
    spec = schema_of("FineTuneJob")["properties"]["spec"]
    rules = {r["fieldPath"]: r for r in spec["x-kubernetes-validations"] if "oldSelf" in r["rule"]}
    assert set(rules) == {f".{name}" for name in spec["properties"] if name != "suspend"}
    assert rules[".resources"]["message"].startswith("spec.resources is immutable: delete the FineTuneJob")
    assert "has(oldSelf.runtime)" in rules[".runtime"]["rule"]  # adding a field the job lacked is an edit too


def test_conditions_are_a_list_map_by_type_and_times_are_date_time() -> None:
    status = schema_of("FineTuneJob")["properties"]["status"]["properties"]
    conditions = status["conditions"]
    assert conditions["x-kubernetes-list-type"] == "map" and conditions["x-kubernetes-list-map-keys"] == ["type"]
    assert conditions["items"]["required"] == ["type", "status"]
    assert conditions["items"]["properties"]["lastTransitionTime"]["format"] == "date-time"
    assert status["startTime"]["format"] == status["completionTime"]["format"] == "date-time"


def test_optional_fields_are_nullable_and_enums_kept() -> None:
    spec = schema_of("FineTuneJob")["properties"]["spec"]["properties"]
    assert spec["training"]["properties"]["lora"]["nullable"] is True
    assert spec["training"]["properties"]["deepspeed"]["properties"]["zeroStage"]["enum"] == [0, 1, 2, 3]


def test_serving_replica_rule_is_a_cel_validation() -> None:
    serving = schema_of("FineTuneJob")["properties"]["spec"]["properties"]["serving"]
    rules = [r["rule"] for r in serving["x-kubernetes-validations"]]
    assert "self.minReplicas <= self.maxReplicas" in rules


def test_every_status_field_the_operator_writes_is_declared() -> None:
    status = schema_of("FineTuneJob")["properties"]["status"]["properties"]
    for field in ["phase", "conditions", "observedGeneration", "bestMetric", "endpoint", "modelUri", "rayJobName", "result"]:
        assert field in status
    assert status["result"]["x-kubernetes-preserve-unknown-fields"] is True


def test_rendered_yaml_parses_into_one_crd_per_kind() -> None:
    docs = [d for d in yaml.safe_load_all(render_crds()) if d]
    assert {d["spec"]["names"]["kind"] for d in docs} >= {"FineTuneJob", "ModelEndpoint"}
