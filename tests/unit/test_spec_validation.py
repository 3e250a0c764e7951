"""Parsing the FineTuneJob spec: defaults, and every validation error names its field and the fix."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from graft.api import FineTuneJob, SpecError, load_job
from graft.api.load import parse_as, parse_object, parse_spec

pytestmark = pytest.mark.unit

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"

MINIMAL: dict[str, Any] = {
    "apiVersion": "graft.dev/v1alpha1",
    "kind": "FineTuneJob",
    "metadata": {"name": "demo"},
    "spec": {"model": {"source": "/models/minilm"}, "dataset": {"source": "data.jsonl"}},
}


def with_spec(**changes: Any) -> dict[str, Any]:
    doc = copy.deepcopy(MINIMAL)
    for dotted, value in changes.items():
        node = doc["spec"]
        *parents, leaf = dotted.split("__")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return doc


def errors_of(doc: dict[str, Any]) -> list[str]:
    with pytest.raises(SpecError) as info:
        parse_as(FineTuneJob, doc)
    return [str(e) for e in info.value.errors]


def test_minimal_spec_gets_documented_defaults() -> None:
    job = parse_as(FineTuneJob, MINIMAL)
    assert job.spec.task == "text-classification"
    assert job.spec.training.deepspeed.zero_stage == 0
    assert job.spec.training.precision == "auto"
    assert job.spec.tuning.metric == "eval_accuracy"
    assert job.spec.tuning.resolved_mode == "max"
    assert job.spec.resources.workers == 1
    assert job.spec.serving.enabled is True


def test_wire_form_round_trips_in_camel_case() -> None:
    job = parse_as(FineTuneJob, with_spec(training__learningRate=1e-4))
    wire = job.to_wire()
    assert wire["spec"]["training"]["learningRate"] == 1e-4
    assert parse_as(FineTuneJob, wire) == job


def test_zero_stage_outside_range_names_the_allowed_values() -> None:
    assert errors_of(with_spec(training__deepspeed={"zeroStage": 5})) == [
        "spec.training.deepspeed.zeroStage: 5 is not one of 0, 1, 2, 3"
    ]


def test_unknown_field_is_rejected_with_the_allowed_fields() -> None:
    [msg] = errors_of(with_spec(training__learnRate=0.1))
    assert msg.startswith("spec.training.learnRate: unknown field; allowed fields: epochs, batchSize, learningRate")


def test_missing_model_is_reported() -> None:
    doc = copy.deepcopy(MINIMAL)
    del doc["spec"]["model"]
    assert errors_of(doc) == ["spec.model: required field is missing"]


def test_every_error_is_reported_at_once() -> None:
    doc = with_spec(training__epochs=0, training__precision="fp8", resources__workers=0)
    assert errors_of(doc) == [
        "spec.training.epochs: 0 must be >= 1",
        "spec.training.precision: 'fp8' is not one of auto, bf16, fp16, fp32",
        "spec.resources.workers: 0 must be >= 1",
    ]


def test_min_replicas_above_max_replicas_is_refused() -> None:
    assert errors_of(with_spec(serving={"minReplicas": 3, "maxReplicas": 2})) == [
        "spec.serving: minReplicas (3) must be <= maxReplicas (2)"
    ]


def test_search_space_rejects_fields_that_cannot_be_searched() -> None:
    [msg] = errors_of(with_spec(tuning__searchSpace={"dropout": {"type": "uniform", "low": 0, "high": 1}}))
    assert msg.startswith("spec.tuning.searchSpace.dropout: 'dropout' is not one of learningRate, batchSize")


@pytest.mark.parametrize(
    ("param", "message"),
    [
        ({"type": "loguniform", "low": 0, "high": 1}, "type loguniform needs low > 0"),
        ({"type": "uniform", "low": 2, "high": 1}, "low (2.0) must be below high (1.0)"),
        ({"type": "uniform", "low": 1}, "type uniform needs both low and high"),
        ({"type": "choice"}, "type choice needs a non-empty values list"),
        ({"type": "choice", "values": [8], "low": 1}, "type choice takes values, not low/high"),
        ({"type": "randint", "values": [1, 2]}, "type randint takes low and high, not values"),
        ({"type": "normal", "low": 1, "high": 2}, "'normal' is not one of uniform, loguniform, choice, randint"),
    ],
)
def test_search_parameter_shape_errors(param: dict[str, Any], message: str) -> None:
    [msg] = errors_of(with_spec(tuning__searchSpace={"learningRate": param}))
    assert msg.startswith("spec.tuning.searchSpace.learningRate")
    assert msg.endswith(message)


def test_parameter_offload_requires_zero_stage_3() -> None:
    [msg] = errors_of(with_spec(training__deepspeed={"zeroStage": 2, "offloadParameters": True}))
    assert msg == "spec.training.deepspeed: offloadParameters needs zeroStage: 3"


def test_lora_and_freeze_base_are_exclusive() -> None:
    [msg] = errors_of(with_spec(training__lora={"r": 4}, training__freezeBase=True))
    assert msg == "spec.training: choose either lora or freezeBase, not both"


def test_memory_must_be_a_quantity() -> None:
    [msg] = errors_of(with_spec(resources__memoryPerWorker="lots"))
    assert msg.startswith("spec.resources.memoryPerWorker: 'lots' does not match")


def test_label_names_must_be_distinct() -> None:
    [msg] = errors_of(with_spec(dataset__labelNames=["a", "a"]))
    assert msg == "spec.dataset.labelNames: label names must be distinct"


def test_cluster_ref_needs_exactly_one_of_name_or_address() -> None:
    [msg] = errors_of(with_spec(runtime__cluster={"name": "shared", "address": "http://x:8265"}))
    assert msg == "spec.runtime.cluster: set exactly one of name or address"


def test_tuning_mode_defaults_to_the_metric_direction() -> None:
    job = parse_as(FineTuneJob, with_spec(tuning__metric="eval_loss"))
    assert job.spec.tuning.resolved_mode == "min"
    assert job.spec.score_metric == "eval_loss"


def test_parse_spec_prefixes_paths_with_spec() -> None:
    with pytest.raises(SpecError) as info:
        parse_spec({"model": {"source": "x"}, "dataset": {"source": "y"}, "suspend": "maybe"})
    assert str(info.value.errors[0]).startswith("spec.suspend:")


def test_unknown_kind_is_named() -> None:
    with pytest.raises(SpecError, match="kind: 'Job' is not one of FineTuneJob, ModelEndpoint"):
        parse_object({"kind": "Job", "spec": {}})


def test_missing_file_is_reported_by_path(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="does not exist"):
        load_job(tmp_path / "nope.yaml")


def test_invalid_yaml_is_reported(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("spec: [unclosed\n")
    with pytest.raises(SpecError, match="not valid YAML"):
        load_job(bad)


@pytest.mark.parametrize("path", sorted(EXAMPLES.glob("*.yaml")), ids=lambda p: p.name)
def test_every_example_validates(path: Path) -> None:
    for doc in yaml.safe_load_all(path.read_text()):
        if doc:
            parse_object(doc, source=str(path))
