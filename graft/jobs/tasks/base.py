"""The Task interface: everything the task-agnostic training loop (`graft.jobs.train`) needs.

A task is one class per `spec.task` value. The loop calls it in two places:

driver (once per job, before any trial):
    `load()`     read and check the raw data (fast; preflight calls it too), raising `DataError`
                 that names the spec field;
    `prepare()`  preprocess it once (tokenise, decode images) into a `TaskData`: numpy columns
                 that the driver puts in the Ray object store once, and every worker of every
                 trial reads zero-copy.

worker (every Train worker of every trial):
    `build_model()`  the trainable `torch.nn.Module` (LoRA / freezeBase applied: `adapt()`);
    `collate()`      rows (indices into a split) -> a dict of CPU tensors, with tensor ops only;
    `loss()`         batch -> scalar loss (the loop applies autocast, backward, the optimizer);
    `eval_sums()`    batch -> additive tensors on the device (the loop sums them over batches and
                     ranks with one all-reduce per evaluation, no host sync per batch);
    `metrics()`      the summed tensors -> `{"eval_loss": ..., ...}` floats;
    `export()`       the trained (unwrapped, full-weight) module -> a self-contained model
                     directory for serving (rank 0, only for the trial's best checkpoint).

Evaluation shards are padded so that every rank runs the same number of forward passes (ZeRO-3
gathers parameters collectively); eval batches carry `valid` (bool per row) and `eval_sums` must
count only the rows where it is true.

How to add a task: subclass `Task` in `graft/jobs/tasks/<name>.py`, set `name`, add the value to
`graft.api.spec.Task` and to `TASKS` in `graft/jobs/tasks/__init__.py`. See
`text_classification.py` for a complete example.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from graft.api.spec import FineTuneJobSpec, TrainingSpec

if TYPE_CHECKING:
    import numpy as np
    import torch

VALID = "valid"  # eval batches: bool per row, False for the padding rows of a rank's shard
METADATA_FILE = "graft_task.json"


@dataclass
class TaskData:
    """The preprocessed data of one job: numpy columns (same first dimension per split).

    `label_names` is empty for tasks without labels. `info` carries anything small the worker side
    needs (e.g. the tokenizer's pad id). The whole object goes through the object store once.
    """

    train: dict[str, np.ndarray]
    validation: dict[str, np.ndarray]
    label_names: list[str] = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)
    sources: dict[str, str] = field(default_factory=dict)

    @staticmethod
    def rows(split: dict[str, np.ndarray]) -> int:
        return len(next(iter(split.values()))) if split else 0

    @property
    def train_rows(self) -> int:
        return self.rows(self.train)

    @property
    def validation_rows(self) -> int:
        return self.rows(self.validation)

    def summary(self) -> str:
        labels = f", labels {self.label_names}" if self.label_names else ""
        return f"{self.train_rows} training / {self.validation_rows} validation rows{labels}"


class Task(ABC):
    """One kind of fine-tuning. Instances are cheap; the worker builds one per trial."""

    name: ClassVar[str]

    def __init__(self, spec: FineTuneJobSpec, training: TrainingSpec | None = None) -> None:
        self.spec = spec
        # The trial's training settings (the searched values applied); the job's outside a trial.
        self.training = training or spec.training

    # -- driver ------------------------------------------------------------------------------------

    @abstractmethod
    def load(self) -> Any:
        """Read and check the raw dataset (raise `graft.jobs.data.DataError` naming the field)."""

    @abstractmethod
    def prepare(self, raw: Any, model_path: Path) -> TaskData:
        """Preprocess `raw` once (e.g. tokenise with the model's tokenizer) into numpy columns."""

    # -- worker ------------------------------------------------------------------------------------

    @abstractmethod
    def build_model(self, model_path: Path, data: TaskData) -> torch.nn.Module:
        """The model to train, on the CPU in fp32 (the loop moves it and sets precision)."""

    @abstractmethod
    def collate(self, split: dict[str, np.ndarray], indices: np.ndarray, data: TaskData) -> dict[str, torch.Tensor]:
        """Rows `indices` of `split` as CPU tensors (pad/trim with tensor ops, no Python loops per row)."""

    @abstractmethod
    def loss(self, model: Any, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """The scalar training loss of one micro-batch (already on the device)."""

    @abstractmethod
    def eval_sums(self, model: Any, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Additive statistics of one eval batch, counting only rows where `batch["valid"]`."""

    @abstractmethod
    def metrics(self, sums: dict[str, torch.Tensor]) -> dict[str, float]:
        """Epoch metrics from the sums over all batches and ranks (at least `eval_loss`)."""

    def train_metrics(self, train_loss: float) -> dict[str, float]:
        """Metrics derived from the epoch's mean training loss (e.g. perplexity); none by default."""
        return {}

    @abstractmethod
    def export(self, model: torch.nn.Module, out: Path, model_path: Path, data: TaskData) -> None:
        """Write a self-contained model directory (e.g. `save_pretrained` + tokenizer) from `model`."""

    # -- optional hooks (defaults do nothing) ------------------------------------------------------

    def start_epoch(self, epoch: int) -> None:
        """Called on every worker before an epoch's first training batch (e.g. seeded augmentation)."""
        return None

    def first_epoch(self, name: str) -> int:
        """The epoch from which parameter `name` trains (its learning rate is 0 before; `freezeBaseEpochs`)."""
        return 1

    def report(self, model_uri: str, data: TaskData) -> dict[str, Any] | None:
        """Driver, after export: extra result-document fields by name (e.g. `distillation`), or None."""
        return None

    # -- helpers shared by tasks --------------------------------------------------------------------

    def adapt(self, model: torch.nn.Module, lora_task_type: str) -> torch.nn.Module:
        """Apply `training.lora` (peft, `lora_task_type` e.g. "SEQ_CLS") or `training.freezeBase`."""
        t = self.training
        if t.lora is not None:
            from peft import LoraConfig, get_peft_model

            config = LoraConfig(
                task_type=lora_task_type,
                r=t.lora.r,
                lora_alpha=t.lora.alpha,
                lora_dropout=t.lora.dropout,
                target_modules=t.lora.target_modules or None,  # None: peft's default for the model type
            )
            return get_peft_model(model, config)  # type: ignore[arg-type]
        if t.freeze_base:
            prefix = getattr(model, "base_model_prefix", "") + "."
            for name, param in model.named_parameters():
                param.requires_grad = not name.startswith(prefix)
        return model


def save_pretrained_merged(model: Any, out: Path) -> Any:
    """`save_pretrained` of `model` as plain fp32 weights; returns what was saved.

    LoRA adapters are merged and low-precision weights cast in a copy, so the training weights are
    left intact; a plain fp32 model is saved as it is (no copy).
    """
    import copy

    import torch

    plain = model
    low_precision = any(p.dtype != torch.float32 for p in model.parameters() if p.is_floating_point())
    if hasattr(model, "merge_and_unload") or low_precision:
        plain = copy.deepcopy(model)
        if hasattr(plain, "merge_and_unload"):  # a peft model
            plain = plain.merge_and_unload()
        plain = plain.float()
    plain.save_pretrained(str(out), safe_serialization=True)
    return plain
