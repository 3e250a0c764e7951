"""The causal-LM task's columns, attention mask and loss (packed rows score like the examples one by one)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from graft.jobs.tasks.causal_lm import CausalLM, block_causal_mask, perplexity, to_columns
from graft.jobs.tasks.chat_format import IGNORE, Encoded, pack
from tests.llm_assets import MODEL_SOURCE, TRAIN_SOURCE, VALIDATION_SOURCE, smollm2_path

pytestmark = pytest.mark.unit


def test_packed_examples_attend_only_within_themselves() -> None:
    import torch

    mask = block_causal_mask(torch.tensor([[0, 0, 1, 1, -1]]))[0, 0]
    assert mask.tolist() == [
        [True, False, False, False, False],
        [True, True, False, False, False],
        [False, False, True, False, False],
        [False, False, True, True, False],
        [False, False, False, False, True],  # padding sees itself only
    ]


def test_columns_mark_each_tokens_example_and_pad_the_rest() -> None:
    rows = pack([Encoded([5, 6, 7], [IGNORE, 6, 7]), Encoded([8, 9], [IGNORE, 9])], max_len=8)
    cols = to_columns(rows, pad_id=0, width=6)
    assert cols["segments"].tolist() == [[0, 0, 0, 1, 1, -1]]
    assert cols["input_ids"].tolist() == [[5, 6, 7, 8, 9, 0]]
    assert cols["labels"][0, -1] == IGNORE and cols["lengths"].tolist() == [5]


def test_perplexity_is_the_exponential_of_the_loss() -> None:
    assert perplexity(0.0) == 1.0 and perplexity(1.0) == pytest.approx(2.718281828)


@pytest.fixture(scope="module")
def task_and_model() -> tuple[CausalLM, Any, Any]:
    from graft.api.spec import FineTuneJobSpec

    spec = FineTuneJobSpec.model_validate(
        {
            "task": "causal-lm",
            "model": {"source": MODEL_SOURCE},
            "dataset": {"source": TRAIN_SOURCE, "validation": {"source": VALIDATION_SOURCE}, "maxSamples": 6},
            "training": {"maxSeqLength": 256},
            "tuning": {"metric": "eval_loss"},
        }
    )
    task = CausalLM(spec)
    data = task.prepare(task.load(), smollm2_path())
    model = task.build_model(smollm2_path(), data).eval()
    return task, data, model


def test_a_packed_batch_has_the_loss_of_its_examples_unpacked(task_and_model: tuple[CausalLM, Any, Any]) -> None:
    import torch

    from graft.jobs.tasks.base import VALID

    task, data, model = task_and_model
    packed = task.collate(data.train, np.arange(data.train_rows), data)
    with torch.no_grad():
        packed_loss = float(task.loss(model, packed))
        val = task.collate(data.validation, np.arange(data.validation_rows), data)
        val[VALID] = torch.ones(data.validation_rows, dtype=torch.bool)
        sums = task.eval_sums(model, val)
    assert data.train_rows < data.info["train_examples"]  # several examples share a row
    assert packed_loss > 0 and task.metrics(sums)["eval_loss"] > 0
    # The same examples, one per row, give the same mean token loss.
    from graft.jobs.tasks.chat_format import encode_all, unpacked

    examples, _ = encode_all(task._tokenizer(smollm2_path()), task.load().train, 256)
    rows = unpacked(examples)
    cols = to_columns(rows, data.info["pad_token_id"], max(len(r) for r in rows))
    with torch.no_grad():
        single = float(task.loss(model, task.collate(cols, np.arange(len(rows)), data)))
    assert packed_loss == pytest.approx(single, rel=1e-3)
