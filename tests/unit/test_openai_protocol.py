"""OpenAI request validation: good requests parse, bad ones are a 4xx naming the field."""

from __future__ import annotations

import json
from typing import Any

import pytest

from graft.serving.generation import find_stop, held_back
from graft.serving.openai_protocol import ApiError, Limits, chunk_body, decode_body, parse_chat, parse_completion, sse

pytestmark = pytest.mark.unit

MODEL = "smol-sft"
LIMITS = Limits(max_text_length=200, max_tokens=64)


def chat(**fields: Any) -> dict[str, Any]:
    return {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], **fields}


def chat_error(body: dict[str, Any]) -> ApiError:
    with pytest.raises(ApiError) as info:
        parse_chat(body, MODEL, LIMITS)
    return info.value


def test_a_chat_request_keeps_its_sampling_settings() -> None:
    req = parse_chat(chat(max_tokens=10, temperature=0.5, top_p=0.9, stop="\n", seed=3, stream=True), MODEL, LIMITS)
    assert (req.max_tokens, req.temperature, req.top_p, req.stop, req.seed, req.stream) == (10, 0.5, 0.9, ["\n"], 3, True)


def test_chat_max_tokens_defaults_to_the_endpoint_limit() -> None:
    assert parse_chat(chat(), MODEL, LIMITS).max_tokens == 64


def test_max_completion_tokens_is_read_like_max_tokens() -> None:
    assert parse_chat(chat(max_completion_tokens=5), MODEL, LIMITS).max_tokens == 5


def test_text_parts_are_joined_into_the_content() -> None:
    body = chat(messages=[{"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]}])
    assert parse_chat(body, MODEL, LIMITS).messages == [{"role": "user", "content": "ab"}]


def test_a_completion_prompt_may_be_a_one_item_list() -> None:
    req = parse_completion({"model": MODEL, "prompt": ["The capital of France is"]}, MODEL, LIMITS)
    assert (req.prompt, req.max_tokens) == ("The capital of France is", 16)


@pytest.mark.parametrize(
    ("fields", "status", "param"),
    [
        ({"model": "gpt-4"}, 404, "model"),
        ({"max_tokens": 65}, 400, "max_tokens"),
        ({"max_tokens": 0}, 400, "max_tokens"),
        ({"temperature": 2.5}, 400, "temperature"),
        ({"top_p": 0}, 400, "top_p"),
        ({"stop": ["a", "b", "c", "d", "e"]}, 400, "stop"),
        ({"seed": "x"}, 400, "seed"),
        ({"n": 2}, 400, "n"),
        ({"tools": []}, 400, "tools"),
        ({"messages": []}, 400, "messages"),
        ({"messages": [{"role": "tool", "content": "x"}]}, 400, "messages[0].role"),
        ({"messages": [{"role": "user", "content": "x" * 201}]}, 400, "messages"),
    ],
)
def test_bad_chat_requests_name_the_field(fields: dict[str, Any], status: int, param: str) -> None:
    err = chat_error(chat(**fields))
    assert (err.status, err.param) == (status, param)
    assert err.body()["error"]["type"] == "invalid_request_error"


def test_a_missing_model_is_refused_with_the_served_name() -> None:
    err = chat_error({"messages": [{"role": "user", "content": "hi"}]})
    assert err.param == "model" and MODEL in err.message


def test_a_body_that_is_not_json_is_a_400() -> None:
    with pytest.raises(ApiError) as info:
        decode_body(b"{not json", LIMITS)
    assert info.value.status == 400


def test_an_oversized_body_is_a_413() -> None:
    with pytest.raises(ApiError) as info:
        decode_body(json.dumps(chat(messages=[{"role": "user", "content": "x" * 100_000}])).encode(), LIMITS)
    assert info.value.status == 413


def test_the_first_chat_chunk_carries_the_role() -> None:
    req = parse_chat(chat(stream=True), MODEL, LIMITS)
    delta = chunk_body(req, "id", 0, "Hel", None, first=True)["choices"][0]["delta"]
    assert delta == {"role": "assistant", "content": "Hel"}


def test_server_sent_events_end_with_a_blank_line() -> None:
    assert sse("[DONE]") == "data: [DONE]\n\n"


def test_a_partial_stop_sequence_is_held_back() -> None:
    assert held_back("Paris.\nQ", ["\nQuestion"]) == 2


def test_the_earliest_stop_sequence_wins() -> None:
    assert find_stop("one. two! three", ["!", "."]) == 3
