"""/predict request parsing: every bad request is a 4xx with a message that says what to fix."""

from __future__ import annotations

import json
from typing import Any

import pytest

from graft.serving.protocol import Limits, RequestError, parse_predict_body, prediction

pytestmark = pytest.mark.unit

LIMITS = Limits(max_text_length=20, max_texts_per_request=3)


def body(doc: Any) -> bytes:
    return json.dumps(doc).encode()


def rejected(raw: bytes) -> RequestError:
    with pytest.raises(RequestError) as info:
        parse_predict_body(raw, LIMITS)
    return info.value


def test_a_single_text_gives_one_input() -> None:
    assert parse_predict_body(body({"text": "great film"}), LIMITS) == ["great film"]


def test_texts_keep_their_order() -> None:
    assert parse_predict_body(body({"texts": ["b", "a", "c"]}), LIMITS) == ["b", "a", "c"]


def test_text_at_the_length_limit_is_accepted() -> None:
    assert parse_predict_body(body({"text": "x" * 20}), LIMITS) == ["x" * 20]


@pytest.mark.parametrize(
    ("raw", "status", "fragment"),
    [
        (b"", 400, "request body is empty"),
        (b"{not json", 400, "not valid JSON"),
        (b"\xff\xfe", 400, "not valid JSON"),
        (body(["great"]), 422, "must be a JSON object, got a list"),
        (body({}), 422, "missing field text"),
        (body({"txt": "great"}), 422, "unknown field(s) txt"),
        (body({"text": "a", "texts": ["b"]}), 422, "either text or texts, not both"),
        (body({"text": 5}), 422, "text must be a string, got a number"),
        (body({"text": None}), 422, "text must be a string, got null"),
        (body({"text": "   "}), 422, "text is empty"),
        (body({"texts": "great"}), 422, "texts must be a list of strings, got a string"),
        (body({"texts": []}), 422, "texts is an empty list"),
        (body({"texts": ["ok", 3]}), 422, "texts[1] must be a string"),
        (body({"texts": ["ok", ""]}), 422, "texts[1] is empty"),
        (body({"texts": ["a", "b", "c", "d"]}), 413, "texts has 4 items, more than the limit of 3"),
        (body({"text": "x" * 21}), 413, "text has 21 characters, more than the limit of 20"),
        (body({"texts": ["ok", "y" * 30]}), 413, "texts[1] has 30 characters"),
    ],
)
def test_bad_requests_are_client_errors_that_say_what_to_fix(raw: bytes, status: int, fragment: str) -> None:
    err = rejected(raw)
    assert err.status == status
    assert fragment in err.message


def test_an_oversized_body_is_refused_before_it_is_parsed() -> None:
    err = rejected(b" " * (LIMITS.max_body_bytes + 1))
    assert err.status == 413 and "send fewer or shorter texts" in err.message


def test_the_body_limit_fits_the_largest_valid_request() -> None:
    raw = json.dumps({"texts": ["\U0001F600" * 20] * 3}).encode()  # 3 texts at the limit, every character escaped
    assert len(raw) <= LIMITS.max_body_bytes
    assert len(parse_predict_body(raw, LIMITS)) == 3


def test_prediction_picks_the_highest_score_and_names_every_label() -> None:
    assert prediction([0.2, 0.8], ["negative", "positive"]) == {
        "label": "positive",
        "scores": {"negative": 0.2, "positive": 0.8},
    }


def test_prediction_refuses_scores_that_do_not_match_the_labels() -> None:
    with pytest.raises(ValueError, match="3 scores for 2 labels"):
        prediction([0.1, 0.2, 0.7], ["a", "b"])
