"""FineTunePolicy: the typed model, its label selector semantics and its generated CRD."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from graft.api.crd import CRDS, build_crd, render_crds
from graft.api.policy import (
    FINETUNEPOLICY,
    FineTunePolicy,
    LabelSelector,
    LabelSelectorRequirement,
    source_allowed,
)

pytestmark = pytest.mark.unit

POLICY_YAML = """
apiVersion: graft.dev/v1alpha1
kind: FineTunePolicy
metadata:
  name: team-limits
spec:
  namespaceSelector:
    matchLabels:
      graft.dev/tenant: "true"
    matchExpressions:
    - key: tier
      operator: In
      values: [gold, silver]
  limits:
    maxWorkers: 4
    maxGpusPerJob: 8
    maxCpusPerWorker: 2
    maxTrials: 20
    maxConcurrentTrials: 2
    maxConcurrentJobs: 3
  allowedModelSources: ["package://", "s3://models/*"]
  allowedDatasetSources: ["s3://data/"]
  allowedImages: ["registry.example.com/graft:*"]
  runtimeDefaults:
    image: registry.example.com/graft:0.1.0
    ttlSecondsAfterFinished: 60
    activeDeadlineSeconds: 7200
    queueName: team-queue
"""


def _walk(node: Any, path: str = "") -> list[tuple[str, dict[str, Any]]]:
    found: list[tuple[str, dict[str, Any]]] = []
    if isinstance(node, dict):
        found.append((path, node))
        for key, value in node.get("properties", {}).items():
            found += _walk(value, f"{path}.{key}")
        if isinstance(node.get("items"), dict):
            found += _walk(node["items"], f"{path}[]")
        if isinstance(node.get("additionalProperties"), dict):
            found += _walk(node["additionalProperties"], f"{path}{{}}")
    return found


def test_policy_parses_from_camel_case_yaml() -> None:
    policy = FineTunePolicy.model_validate(yaml.safe_load(POLICY_YAML))
    assert policy.name == "team-limits"
    assert policy.spec.limits.max_gpus_per_job == 8
    assert policy.spec.runtime_defaults.queue_name == "team-queue"
    assert policy.to_wire()["spec"]["limits"]["maxConcurrentJobs"] == 3


def test_policy_rejects_unknown_limit_field() -> None:
    doc = yaml.safe_load(POLICY_YAML)
    doc["spec"]["limits"]["maxGpus"] = 1
    with pytest.raises(ValidationError, match="maxGpus"):
        FineTunePolicy.model_validate(doc)


def test_policy_with_empty_spec_is_valid() -> None:
    policy = FineTunePolicy.model_validate({"metadata": {"name": "open"}})
    assert policy.spec.selects({"anything": "x"})


def test_cluster_scoped_name_may_contain_dots() -> None:
    assert FineTunePolicy.model_validate({"metadata": {"name": "team-a.limits"}}).name == "team-a.limits"


@pytest.mark.parametrize(
    ("labels", "expected"),
    [
        ({"graft.dev/tenant": "true", "tier": "gold"}, True),
        ({"graft.dev/tenant": "true", "tier": "bronze"}, False),
        ({"graft.dev/tenant": "true"}, False),
        ({"tier": "gold"}, False),
    ],
)
def test_namespace_selector_combines_labels_and_expressions(labels: dict[str, str], expected: bool) -> None:
    policy = FineTunePolicy.model_validate(yaml.safe_load(POLICY_YAML))
    assert policy.spec.selects(labels) is expected


@pytest.mark.parametrize(
    ("operator", "values", "labels", "expected"),
    [
        ("NotIn", ["prod"], {}, True),
        ("NotIn", ["prod"], {"env": "prod"}, False),
        ("NotIn", ["prod"], {"env": "dev"}, True),
        ("Exists", [], {"env": ""}, True),
        ("Exists", [], {}, False),
        ("DoesNotExist", [], {}, True),
        ("DoesNotExist", [], {"env": "dev"}, False),
    ],
)
def test_match_expression_operators_follow_kubernetes(
    operator: str, values: list[str], labels: dict[str, str], expected: bool
) -> None:
    req = LabelSelectorRequirement(key="env", operator=operator, values=values)  # type: ignore[arg-type]
    assert req.matches(labels) is expected


def test_empty_selector_matches_every_namespace() -> None:
    assert LabelSelector().matches({}) and LabelSelector().matches({"a": "b"})


def test_in_operator_without_values_is_refused() -> None:
    with pytest.raises(ValidationError, match="needs a non-empty values list"):
        LabelSelectorRequirement(key="env", operator="In")


def test_exists_operator_with_values_is_refused() -> None:
    with pytest.raises(ValidationError, match="takes no values"):
        LabelSelectorRequirement(key="env", operator="Exists", values=["x"])


@pytest.mark.parametrize(
    ("value", "patterns", "expected"),
    [
        ("s3://data/imdb.csv", ["s3://data/"], True),
        ("s3://database/x.csv", ["s3://data/"], False),
        ("s3://models/bert", ["s3://models/*"], True),
        ("s3://models/org/bert", ["s3://models/*"], True),
        ("registry.example.com/graft:0.1", ["registry.example.com/graft:*"], True),
        ("registry.example.com/evil:0.1", ["registry.example.com/graft:*"], False),
        ("hf://org/model", ["hf://org/model"], True),
        ("anything", [], True),
    ],
)
def test_source_patterns_are_prefixes_or_globs(value: str, patterns: list[str], expected: bool) -> None:
    assert source_allowed(value, patterns) is expected


def test_policy_crd_is_cluster_scoped_with_short_name() -> None:
    crd = build_crd(FINETUNEPOLICY)
    assert crd["metadata"]["name"] == "finetunepolicies.graft.dev"
    assert crd["spec"]["scope"] == "Cluster"
    assert crd["spec"]["names"]["shortNames"] == ["ftp"]
    assert crd["spec"]["versions"][0]["subresources"] == {"status": {}}


def test_policy_crd_schema_is_structural() -> None:
    schema = build_crd(FINETUNEPOLICY)["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    for path, node in _walk(schema):
        assert "$ref" not in node and "anyOf" not in node and "oneOf" not in node, path
        assert node.get("additionalProperties") is not False, path
        assert "type" in node or node.get("x-kubernetes-preserve-unknown-fields"), f"{path} has no type"


def test_selector_operator_rule_is_a_cel_validation() -> None:
    schema = build_crd(FINETUNEPOLICY)["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    req = schema["properties"]["spec"]["properties"]["namespaceSelector"]["properties"]["matchExpressions"]["items"]
    assert "has(self.values)" in req["x-kubernetes-validations"][0]["rule"]


def test_rendered_crds_include_the_policy() -> None:
    kinds = {d["spec"]["names"]["kind"] for d in yaml.safe_load_all(render_crds()) if d}
    assert "FineTunePolicy" in kinds
    assert any(c.kind == "FineTunePolicy" for c in CRDS)


def policy_examples_in_docs() -> list[dict[str, Any]]:
    """The FineTunePolicy YAML blocks of docs/policy.md and docs/tenancy.md."""
    docs = Path(__file__).resolve().parents[2] / "docs"
    found = []
    for name in ("policy.md", "tenancy.md"):
        path = docs / name
        if not path.exists():
            continue
        for block in re.findall(r"```yaml\n(.*?)```", path.read_text(), flags=re.S):
            for doc in yaml.safe_load_all(block):
                if isinstance(doc, dict) and doc.get("kind") == "FineTunePolicy":
                    found.append(doc)
    return found


def test_docs_policy_examples_are_valid_policies() -> None:
    examples = policy_examples_in_docs()
    assert examples, "docs/policy.md has no FineTunePolicy example"
    for doc in examples:
        FineTunePolicy.model_validate(doc)
