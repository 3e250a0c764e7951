"""Causal-LM supervised fine-tuning (SFT): chat data, loss on the completion tokens only.

Data: `graft.jobs.tasks.chat_data` (OpenAI `messages` rows or prompt/completion pairs).
Preprocessing, once in the driver: each conversation is rendered with the model's chat template
and labelled (-100 outside the assistant turns, `chat_format.encode_conversation`); with
`training.packing` (the default) examples are packed into rows of `maxSeqLength` tokens, which
removes nearly all padding; without it each example is its own row.
Rows are stored as numpy matrices: `input_ids`, `labels`, `position_ids` (restarting at each
packed example) and `segments` (the example number inside the row, -1 for padding), from which
`collate` builds a block-diagonal causal mask with tensor ops, so packed examples never see
each other.
Model: LoRA by default (merged into the weights on export); `training.fullFineTune` trains every
weight (pair it with ZeRO-3 for models that do not fit); `training.quantization: 4bit` is QLoRA
(GPU only). Metrics: `eval_loss` (mean NLL per completion token), `eval_perplexity` = exp of it,
and `train_perplexity` from the epoch's mean training loss.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

from graft.jobs.tasks.base import VALID, Task, TaskData, save_pretrained_merged
from graft.jobs.tasks.chat_data import ChatDataset, load_chat_dataset
from graft.jobs.tasks.chat_format import IGNORE, Row, encode_all, pack, unpacked
from graft.jobs.tasks.lm_loading import load_model, load_tokenizer

if TYPE_CHECKING:
    import numpy as np
    import torch

# Perplexity is reported as exp(loss) capped here, so an untrained model's huge loss stays finite JSON.
MAX_LOG_PERPLEXITY = 50.0


def perplexity(loss: float) -> float:
    return math.exp(min(loss, MAX_LOG_PERPLEXITY)) if not math.isnan(loss) else math.nan


def to_columns(rows: list[Row], pad_id: int, width: int) -> dict[str, np.ndarray]:
    """Rows as right-padded int32 matrices [N, width] plus true lengths [N]."""
    import numpy as np

    n = len(rows)
    cols = {
        "input_ids": np.full((n, width), pad_id, dtype=np.int32),
        "labels": np.full((n, width), IGNORE, dtype=np.int32),
        "position_ids": np.zeros((n, width), dtype=np.int32),
        "segments": np.full((n, width), -1, dtype=np.int32),
        "lengths": np.zeros(n, dtype=np.int32),
    }
    for i, row in enumerate(rows):
        k = len(row)
        cols["input_ids"][i, :k] = row.input_ids
        cols["labels"][i, :k] = row.labels
        cols["position_ids"][i, :k] = row.position_ids
        seg = np.repeat(np.arange(len(row.segments), dtype=np.int32), row.segments)
        cols["segments"][i, :k] = seg
        cols["lengths"][i] = k
    return cols


def block_causal_mask(segments: torch.Tensor) -> torch.Tensor:
    """[B, 1, L, L] bool: token i may attend to token j when both are in the same example and j <= i.

    Padding tokens (segment -1) attend to themselves only, so no row of the mask is empty.
    """
    import torch

    width = segments.shape[1]
    causal = torch.ones((width, width), dtype=torch.bool, device=segments.device).tril()
    same = segments[:, :, None] == segments[:, None, :]
    real = (segments >= 0)[:, :, None]
    eye = torch.eye(width, dtype=torch.bool, device=segments.device)
    return ((same & causal & real) | eye)[:, None, :, :]


class CausalLM(Task):
    name = "causal-lm"

    def load(self) -> ChatDataset:
        return load_chat_dataset(self.spec.dataset)

    def _tokenizer(self, model_path: Path) -> Any:
        return load_tokenizer(model_path, self.spec.model.trust_remote_code)

    def prepare(self, raw: ChatDataset, model_path: Path) -> TaskData:
        tokenizer = self._tokenizer(model_path)
        max_len = self.training.max_seq_length
        train, dropped_train = encode_all(tokenizer, raw.train, max_len)
        val, dropped_val = encode_all(tokenizer, raw.validation, max_len)
        if not train or not val:
            from graft.jobs.data import DataError

            raise DataError("spec.training.maxSeqLength", f"{max_len} tokens leave no completion token in the {'training' if not train else 'validation'} data; raise maxSeqLength")
        # Evaluation never packs, so eval_loss does not depend on how the examples were packed.
        train_rows = pack(train, max_len) if self.training.packing else unpacked(train)
        val_rows = unpacked(val)
        pad = int(tokenizer.pad_token_id)
        return TaskData(
            train=to_columns(train_rows, pad, max(len(r) for r in train_rows)),
            validation=to_columns(val_rows, pad, max(len(r) for r in val_rows)),
            info={
                "pad_token_id": pad,
                "train_examples": len(train),
                "validation_examples": len(val),
                "dropped_examples": dropped_train + dropped_val,
                "train_tokens": sum(len(e.input_ids) for e in train),
                "trained_tokens": sum(e.trained_tokens for e in train),
                "packing": self.training.packing,
            },
            sources=dict(raw.sources),
        )

    def build_model(self, model_path: Path, data: TaskData) -> torch.nn.Module:
        t = self.training
        model = load_model(model_path, quantization=t.quantization, trust_remote_code=self.spec.model.trust_remote_code)
        if model.config.pad_token_id is None:
            model.config.pad_token_id = data.info["pad_token_id"]
        model.config.use_cache = False
        if t.quantization == "4bit":
            from peft import prepare_model_for_kbit_training

            model = prepare_model_for_kbit_training(model)
        if t.full_fine_tune:
            return model
        return self.adapt(model, "CAUSAL_LM")

    def collate(self, split: dict[str, np.ndarray], indices: np.ndarray, data: TaskData) -> dict[str, torch.Tensor]:
        import torch

        lengths = split["lengths"][indices]
        width = max(1, int(lengths.max())) if len(indices) else 1
        take = {k: torch.from_numpy(split[k][indices, :width]).long() for k in ("input_ids", "labels", "position_ids", "segments")}
        return {
            "input_ids": take["input_ids"],
            "labels": take["labels"],
            "position_ids": take["position_ids"],
            "attention_mask": block_causal_mask(take["segments"]),
        }

    def _logits(self, model: Any, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        out = model(input_ids=batch["input_ids"], position_ids=batch["position_ids"], attention_mask=batch["attention_mask"])
        return out.logits

    def _token_nll(self, model: Any, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-token NLL [B, L-1] (fp32) of the shifted labels and the mask of trained tokens."""
        import torch.nn.functional as F

        logits = self._logits(model, batch)[:, :-1].float()
        target = batch["labels"][:, 1:]
        mask = target != IGNORE
        nll = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), target.clamp(min=0).reshape(-1), reduction="none")
        return nll.view_as(target) * mask, mask

    def loss(self, model: Any, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        nll, mask = self._token_nll(model, batch)
        return nll.sum() / mask.sum().clamp(min=1)

    def eval_sums(self, model: Any, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        import torch

        nll, mask = self._token_nll(model, batch)
        valid = batch[VALID].to(nll.device)[:, None]
        return {
            "nll": (nll.to(torch.float64) * valid).sum(),
            "tokens": (mask & valid).sum().to(torch.float64),
        }

    def metrics(self, sums: dict[str, torch.Tensor]) -> dict[str, float]:
        loss = float(sums["nll"]) / max(1.0, float(sums["tokens"]))
        return {"eval_loss": loss, "eval_perplexity": perplexity(loss)}

    def train_metrics(self, train_loss: float) -> dict[str, float]:
        return {"train_perplexity": perplexity(train_loss)}

    def export(self, model: torch.nn.Module, out: Path, model_path: Path, data: TaskData) -> None:
        """A plain Hugging Face causal-LM directory: merged fp32 weights, tokenizer with its chat template."""
        saved = save_pretrained_merged(model, out)
        saved.config.use_cache = True
        saved.config.save_pretrained(str(out))
        if getattr(saved, "generation_config", None) is not None:
            saved.generation_config.save_pretrained(str(out))
        self._tokenizer(model_path).save_pretrained(str(out))
