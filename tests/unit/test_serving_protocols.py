"""KServe v1, Open Inference Protocol v2 and TEI request shapes map onto the same texts and scores."""

from __future__ import annotations

import pytest

from graft.serving.protocol import Limits, RequestError
from graft.serving.protocols import parse_tei, parse_v1, parse_v2, tei_response, v2_metadata, v2_response

pytestmark = pytest.mark.unit

LIMITS = Limits(max_text_length=50, max_texts_per_request=3)
LABELS = ["negative", "positive"]


def refused(parse, body) -> RequestError:  # type: ignore[no-untyped-def]
    with pytest.raises(RequestError) as info:
        parse(body, LIMITS)
    return info.value


def test_v1_instances_are_the_texts_in_order() -> None:
    assert parse_v1({"instances": ["b", "a"]}, LIMITS) == ["b", "a"]


def test_v1_instances_may_be_objects_with_a_text() -> None:
    assert parse_v1({"instances": [{"text": "good"}]}, LIMITS) == ["good"]


def test_v1_without_instances_is_refused_with_an_example() -> None:
    err = refused(parse_v1, {"inputs": ["x"]})
    assert err.status == 422 and '{"instances":' in err.message


def test_v1_too_many_instances_is_413() -> None:
    assert refused(parse_v1, {"instances": ["a", "b", "c", "d"]}).status == 413


def test_v2_bytes_tensor_gives_texts_and_the_request_id() -> None:
    body = {"id": "r1", "inputs": [{"name": "text", "shape": [2], "datatype": "BYTES", "data": ["a", "b"]}]}
    assert parse_v2(body, LIMITS) == (["a", "b"], "r1")


def test_v2_non_bytes_datatype_is_refused() -> None:
    body = {"inputs": [{"name": "text", "shape": [1], "datatype": "FP32", "data": [1.0]}]}
    err = refused(parse_v2, body)
    assert err.status == 422 and "BYTES" in err.message


def test_v2_shape_must_match_the_data() -> None:
    body = {"inputs": [{"name": "text", "shape": [3], "datatype": "BYTES", "data": ["a"]}]}
    assert "shape" in refused(parse_v2, body).message


def test_v2_empty_text_names_its_position() -> None:
    body = {"inputs": [{"name": "text", "shape": [2], "datatype": "BYTES", "data": ["a", " "]}]}
    assert "inputs[0].data[1]" in refused(parse_v2, body).message


def test_v2_response_has_labels_and_flat_scores() -> None:
    out = v2_response("sentiment", 3, "r1", [[0.9, 0.1], [0.2, 0.8]], LABELS)
    assert out["model_name"] == "sentiment" and out["model_version"] == "3" and out["id"] == "r1"
    label, scores = out["outputs"]
    assert label == {"name": "label", "shape": [2], "datatype": "BYTES", "data": ["negative", "positive"]}
    assert scores == {"name": "scores", "shape": [2, 2], "datatype": "FP32", "data": [0.9, 0.1, 0.2, 0.8]}


def test_v2_metadata_describes_the_tensors() -> None:
    meta = v2_metadata("sentiment", None, LABELS)
    assert meta["inputs"] == [{"name": "text", "datatype": "BYTES", "shape": [-1]}]
    assert meta["outputs"][1]["shape"] == [-1, 2]


def test_tei_inputs_may_be_one_text_or_a_list() -> None:
    assert parse_tei({"inputs": "good"}, LIMITS) == ["good"]
    assert parse_tei({"inputs": ["good", "bad"]}, LIMITS) == ["good", "bad"]


def test_tei_text_over_the_limit_is_413() -> None:
    assert refused(parse_tei, {"inputs": "x" * 51}).status == 413


def test_tei_response_sorts_labels_by_score() -> None:
    assert tei_response([[0.3, 0.7]], LABELS) == [[{"label": "positive", "score": 0.7}, {"label": "negative", "score": 0.3}]]
