"""Chat-template formatting, completion-only labels and packing, with SmolLM2's real tokenizer."""

from __future__ import annotations

from typing import Any

import pytest

from graft.jobs.tasks.chat_format import IGNORE, Encoded, encode_conversation, pack
from tests.llm_assets import smollm2_path

pytestmark = pytest.mark.unit

CHAT = [
    {"role": "system", "content": "Answer in one sentence."},
    {"role": "user", "content": "What is the capital of France?"},
    {"role": "assistant", "content": "The capital of France is Paris."},
]


@pytest.fixture(scope="module")
def tokenizer() -> Any:
    from graft.jobs.tasks.lm_loading import load_tokenizer

    return load_tokenizer(smollm2_path())


def trained_text(tokenizer: Any, ex: Encoded) -> str:
    return str(tokenizer.decode([t for t, y in zip(ex.input_ids, ex.labels, strict=True) if y != IGNORE]))


def test_the_conversation_is_rendered_with_the_models_chat_template(tokenizer: Any) -> None:
    ex = encode_conversation(tokenizer, CHAT, 256)
    assert tokenizer.decode(ex.input_ids) == tokenizer.apply_chat_template(CHAT, tokenize=False)


def test_only_the_assistant_reply_and_its_end_of_turn_are_trained(tokenizer: Any) -> None:
    ex = encode_conversation(tokenizer, CHAT, 256)
    assert trained_text(tokenizer, ex) == "The capital of France is Paris.<|im_end|>"


def test_every_prompt_token_is_labelled_minus_100(tokenizer: Any) -> None:
    ex = encode_conversation(tokenizer, CHAT, 256)
    prompt = tokenizer.apply_chat_template(CHAT[:2], tokenize=False, add_generation_prompt=True)
    n_prompt = len(tokenizer(prompt, add_special_tokens=False)["input_ids"])
    assert ex.labels[:n_prompt] == [IGNORE] * n_prompt
    # The reply is trained up to its end-of-turn token; the newline the template adds after it is not.
    assert IGNORE not in ex.labels[n_prompt:-1]
    assert (tokenizer.decode(ex.input_ids[-1:]), ex.labels[-1]) == ("\n", IGNORE)


def test_every_assistant_turn_of_a_multi_turn_chat_is_trained(tokenizer: Any) -> None:
    chat = [*CHAT, {"role": "user", "content": "And of Spain?"}, {"role": "assistant", "content": "Madrid."}]
    ex = encode_conversation(tokenizer, chat, 256)
    assert trained_text(tokenizer, ex) == "The capital of France is Paris.<|im_end|>Madrid.<|im_end|>"


def test_truncation_keeps_at_most_max_len_tokens(tokenizer: Any) -> None:
    ex = encode_conversation(tokenizer, CHAT, 16)
    assert len(ex.input_ids) == len(ex.labels) == 16


def example(n: int, first: int = 1) -> Encoded:
    return Encoded(list(range(first, first + n)), list(range(first, first + n)))


def test_packing_fills_rows_up_to_the_limit() -> None:
    rows = pack([example(6), example(5), example(4), example(3)], max_len=10)
    assert sorted(r.segments for r in rows) == [[5, 3], [6, 4]]


def test_packed_positions_restart_at_every_example() -> None:
    (row,) = pack([example(3), example(2)], max_len=8)
    assert row.position_ids == [0, 1, 2, 0, 1]


def test_the_first_token_of_a_packed_example_is_never_a_target() -> None:
    (row,) = pack([example(3, first=10), example(2, first=20)], max_len=8)
    assert row.labels == [IGNORE, 11, 12, IGNORE, 21]


def test_an_example_longer_than_the_row_gets_a_row_of_its_own() -> None:
    rows = pack([example(9), example(2)], max_len=10)
    assert [r.segments for r in rows] == [[9], [2]]
