"""Text classification: a Hugging Face sequence-classification head on a pretrained encoder.

Data: `graft.jobs.data.load_dataset` (texts and label ids). Preprocessing: one batched tokenizer
call in the driver, truncated to `training.maxSeqLength`; the ids are stored right-padded in one
int32 matrix with the true lengths, and each batch is trimmed to its longest row with tensor ops.
Metrics: `eval_loss` (mean per-row cross-entropy), `eval_accuracy`, `eval_f1` (macro over the
labels present in the validation labels or predictions, like scikit-learn's `f1_score`).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from graft.jobs.data import LoadedDataset, load_dataset
from graft.jobs.tasks.base import VALID, Task, TaskData, save_pretrained_merged

if TYPE_CHECKING:
    import numpy as np
    import torch


def tokenize(tokenizer: Any, texts: list[str], max_length: int) -> tuple[np.ndarray, np.ndarray]:
    """(ids right-padded to the longest row as int32 [N, L], lengths int32 [N]) from one batched call."""
    import numpy as np

    enc = tokenizer(texts, truncation=True, max_length=max_length, padding=False, return_attention_mask=False)
    rows = enc["input_ids"]
    lengths = np.fromiter((len(r) for r in rows), dtype=np.int32, count=len(rows))
    width = int(lengths.max()) if len(rows) else 1
    ids = np.full((len(rows), width), tokenizer.pad_token_id, dtype=np.int32)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = r
    return ids, lengths


def load_tokenizer(model_path: Path, trust_remote_code: bool) -> Any:
    """The model's tokenizer, with a pad token (EOS or UNK when the model has none)."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_path, trust_remote_code=trust_remote_code)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token or tokenizer.unk_token
    return tokenizer


def macro_f1(confusion: torch.Tensor) -> float:
    """Macro F1 from a [true, predicted] confusion matrix, over labels that occur in either."""
    tp = confusion.diag()
    fp = confusion.sum(0) - tp
    fn = confusion.sum(1) - tp
    present = (tp + fp + fn) > 0
    if not bool(present.any()):
        return 0.0
    f1 = 2 * tp / (2 * tp + fp + fn).clamp(min=1e-12)
    return float(f1[present].mean())


class TextClassification(Task):
    name = "text-classification"

    def load(self) -> LoadedDataset:
        return load_dataset(self.spec.dataset)

    def prepare(self, raw: LoadedDataset, model_path: Path) -> TaskData:
        import numpy as np

        tokenizer = load_tokenizer(model_path, self.spec.model.trust_remote_code)
        max_len = self.training.max_seq_length
        train_ids, train_len = tokenize(tokenizer, raw.train_texts, max_len)
        val_ids, val_len = tokenize(tokenizer, raw.val_texts, max_len)
        return TaskData(
            train={"input_ids": train_ids, "lengths": train_len, "labels": np.asarray(raw.train_labels, dtype=np.int64)},
            validation={"input_ids": val_ids, "lengths": val_len, "labels": np.asarray(raw.val_labels, dtype=np.int64)},
            label_names=list(raw.label_names),
            info={"pad_token_id": int(tokenizer.pad_token_id), "stratified": raw.stratified},
            sources=dict(raw.sources),
        )

    def build_model(self, model_path: Path, data: TaskData) -> torch.nn.Module:
        import torch
        from transformers import AutoModelForSequenceClassification

        names = data.label_names
        model = AutoModelForSequenceClassification.from_pretrained(
            model_path,
            num_labels=len(names),
            id2label=dict(enumerate(names)),
            label2id={n: i for i, n in enumerate(names)},
            trust_remote_code=self.spec.model.trust_remote_code,
            dtype=torch.float32,
        )
        if model.config.pad_token_id is None:
            model.config.pad_token_id = data.info["pad_token_id"]
        return self.adapt(model, "SEQ_CLS")

    def collate(self, split: dict[str, np.ndarray], indices: np.ndarray, data: TaskData) -> dict[str, torch.Tensor]:
        import torch

        lengths = torch.from_numpy(split["lengths"][indices])
        width = max(1, int(lengths.max())) if len(indices) else 1
        ids = torch.from_numpy(split["input_ids"][indices, :width]).long()
        mask = (torch.arange(width)[None, :] < lengths[:, None]).long()
        return {"input_ids": ids, "attention_mask": mask, "labels": torch.from_numpy(split["labels"][indices])}

    def _logits(self, model: Any, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits.float()

    def loss(self, model: Any, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        import torch.nn.functional as F

        return F.cross_entropy(self._logits(model, batch), batch["labels"])

    def eval_sums(self, model: Any, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        import torch
        import torch.nn.functional as F

        logits = self._logits(model, batch)
        labels = batch["labels"]
        valid = batch[VALID]
        weight = valid.to(torch.float64)
        losses = F.cross_entropy(logits, labels, reduction="none").to(torch.float64)
        n = logits.shape[-1]
        pairs = labels[valid] * n + logits.argmax(-1)[valid]
        confusion = torch.bincount(pairs, minlength=n * n).reshape(n, n).to(torch.float64)
        return {"loss": (losses * weight).sum(), "rows": weight.sum(), "confusion": confusion}

    def metrics(self, sums: dict[str, torch.Tensor]) -> dict[str, float]:
        rows = max(1.0, float(sums["rows"]))
        confusion = sums["confusion"].cpu()
        return {
            "eval_loss": float(sums["loss"]) / rows,
            "eval_accuracy": float(confusion.diag().sum()) / rows,
            "eval_f1": macro_f1(confusion),
        }

    def export(self, model: torch.nn.Module, out: Path, model_path: Path, data: TaskData) -> None:
        saved = save_pretrained_merged(model, out)
        names = data.label_names
        saved.config.id2label = dict(enumerate(names))
        saved.config.label2id = {n: i for i, n in enumerate(names)}
        saved.config.save_pretrained(str(out))
        load_tokenizer(model_path, self.spec.model.trust_remote_code).save_pretrained(str(out))
