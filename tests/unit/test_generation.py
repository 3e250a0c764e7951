"""Token-by-token generation with the real SmolLM2: limits, stop sequences, seeds, usage counts."""

from __future__ import annotations

import pytest

from graft.serving.generation import LanguageModel, Step
from graft.serving.openai_protocol import ApiError, GenerationRequest
from tests.llm_assets import smollm2_path

pytestmark = pytest.mark.unit


@pytest.fixture(scope="module")
def lm() -> LanguageModel:
    import torch

    from graft.jobs.tasks.lm_loading import materialize

    torch.set_num_threads(1)
    return LanguageModel.load(materialize(smollm2_path()), torch.device("cpu"), max_context=256)


def ask(content: str = "What is the capital of France?", **kw: object) -> GenerationRequest:
    fields: dict[str, object] = {"max_tokens": 12, "temperature": 0.0, **kw}
    return GenerationRequest(kind="chat", model="m", messages=[{"role": "user", "content": content}], **fields)  # type: ignore[arg-type]


def run(lm: LanguageModel, req: GenerationRequest) -> tuple[str, Step]:
    steps = list(lm.generate(req, lm.prompt_ids(req)))
    return "".join(s.text for s in steps), steps[-1]


def test_greedy_generation_answers_and_counts_tokens(lm: LanguageModel) -> None:
    text, last = run(lm, ask())
    assert "Paris" in text
    assert last.prompt_tokens > 0 and 0 < last.completion_tokens <= 12


def test_max_tokens_ends_with_finish_reason_length(lm: LanguageModel) -> None:
    _, last = run(lm, ask("Write a long story about a dragon.", max_tokens=3))
    assert (last.finish, last.completion_tokens) == ("length", 3)


def test_a_stop_sequence_ends_the_text_before_it(lm: LanguageModel) -> None:
    text, last = run(lm, ask(stop=["Paris"], max_tokens=20))
    assert last.finish == "stop" and "Paris" not in text


def test_the_same_seed_samples_the_same_text(lm: LanguageModel) -> None:
    first, _ = run(lm, ask("Name three animals.", temperature=1.0, seed=7))
    second, _ = run(lm, ask("Name three animals.", temperature=1.0, seed=7))
    assert first == second


def test_a_prompt_longer_than_the_context_is_a_400(lm: LanguageModel) -> None:
    with pytest.raises(ApiError) as info:
        lm.prompt_ids(ask("word " * 400))
    assert (info.value.status, info.value.code) == (400, "context_length_exceeded")


def test_the_default_max_tokens_shrinks_to_fit_the_context(lm: LanguageModel) -> None:
    req = ask("word " * 200, max_tokens=200)  # not given by the client: the endpoint's default
    ids = lm.prompt_ids(req)
    assert req.max_tokens == lm.max_context - len(ids)


def test_an_explicit_max_tokens_beyond_the_context_is_a_400(lm: LanguageModel) -> None:
    with pytest.raises(ApiError) as info:
        lm.prompt_ids(ask("word " * 200, max_tokens=200, max_tokens_given=True))
    assert info.value.code == "context_length_exceeded"
