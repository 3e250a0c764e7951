"""Image classification: a pretrained vision backbone with a new head (see `image_model.py`).

Data: `image_data.load_images` (an image folder, a table of paths or bytes, IDX files). Preprocessing
in the driver: every image resized (shorter side) and centre-cropped to the model's input size and
stored as one uint8 array [N, S, S, C]; each training batch is augmented on the worker from
(`dataset.seed`, epoch, row), so runs repeat exactly. Evaluation and serving use the plain view.
Training options: `freezeBase` (head only), `freezeBaseEpochs` (head only, then the whole
network), `lora` (peft; default targets: EfficientNet's 1x1 convolutions, a transformers model's
attention projections), and `distillation` (a teacher's softened logits, see `distill.py`).
Metrics: `eval_loss`, `eval_accuracy`, `eval_f1` (macro).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from graft.jobs.tasks.base import VALID, Task, TaskData
from graft.jobs.tasks.image_data import LoadedImages, load_images

if TYPE_CHECKING:
    import numpy as np
    import torch

    from graft.jobs.tasks.image_model import ImageClassifier

EFFNET_LORA_TARGETS = ["_expand_conv", "_project_conv"]


def stack_images(images: list[np.ndarray], preprocess: Any, channels: int) -> np.ndarray:
    """[N, S, S, C] uint8 of the evaluation view of every image (C = 1 when all are grey)."""
    import numpy as np

    from graft.jobs.tasks.image_transforms import _resize_center, _to_pil

    size = preprocess.model_input.image_size
    keep = 1 if all(img.ndim == 2 for img in images) else channels
    out = np.empty((len(images), size, size, keep), dtype=np.uint8)
    for i, img in enumerate(images):
        arr = np.asarray(_resize_center(_to_pil(img, keep), size))
        out[i] = arr.reshape(size, size, keep)
    return out


def plain_pointwise(model: Any) -> None:
    """Swap EfficientNet's 1x1 static-"same"-padding convolutions (padding 0) for plain `nn.Conv2d`.

    peft builds LoRA's A/B layers with the base layer's class, and the static-padding class cannot be
    built without an image size; a 1x1 stride-1 convolution pads nothing, so the swap is exact and
    keeps the parameter names.
    """
    from torch import nn

    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, nn.Conv2d) and type(child) is not nn.Conv2d and child.kernel_size == (1, 1) and child.stride == (1, 1):
                plain = nn.Conv2d(child.in_channels, child.out_channels, 1, bias=child.bias is not None, groups=child.groups)
                plain.load_state_dict(child.state_dict(), strict=False)
                setattr(parent, name, plain)


class ImageClassification(Task):
    name = "image-classification"

    def __init__(self, spec: Any, training: Any = None) -> None:
        super().__init__(spec, training)
        self.epoch = 1
        self._teacher: Any = None

    # -- driver ------------------------------------------------------------------------------------

    def load(self) -> LoadedImages:
        return load_images(self.spec.dataset)

    def _model(self, model_path: Path, label_names: list[str], pretrained: bool = True) -> ImageClassifier:
        from graft.jobs.tasks.image_model import load_image_model

        if model_path.is_file() and model_path.suffix == ".json":  # a Graft result document: its model
            from graft.jobs.tasks.distill import model_dir_of

            model_path = model_dir_of(str(model_path), "spec.model.source")
        d = self.spec.distillation
        return load_image_model(
            model_path,
            label_names,
            image_size=self.spec.dataset.image_size,
            pretrained=pretrained,
            student_layers=d.student_layers if d is not None else None,
            trust_remote_code=self.spec.model.trust_remote_code,
        )

    def _preprocess(self, model_input: Any, augment: bool = False) -> Any:
        from graft.jobs.tasks.image_transforms import Preprocess, resolve_input

        ds = self.spec.dataset
        return Preprocess(resolve_input(model_input, ds), ds.augmentation if augment else None, seed=ds.seed)

    def prepare(self, raw: LoadedImages, model_path: Path) -> TaskData:
        import numpy as np

        model = self._model(model_path, raw.label_names)
        prep = self._preprocess(model.model_input)
        info: dict[str, Any] = {"input": prep.model_input.to_dict(), "parameters": model.num_parameters(), "stratified": raw.stratified}
        if self.spec.distillation is not None:
            from graft.jobs.tasks.distill import teacher_summary

            info["teacher"] = teacher_summary(self.spec.distillation.teacher, raw.label_names)
        channels = prep.model_input.channels
        return TaskData(
            train={"pixels": stack_images(raw.train_images, prep, channels), "labels": np.asarray(raw.train_labels, dtype=np.int64)},
            validation={"pixels": stack_images(raw.val_images, prep, channels), "labels": np.asarray(raw.val_labels, dtype=np.int64)},
            label_names=list(raw.label_names),
            info=info,
            sources=dict(raw.sources),
        )

    # -- worker ------------------------------------------------------------------------------------

    def start_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def build_model(self, model_path: Path, data: TaskData) -> torch.nn.Module:
        from graft.jobs.tasks.image_transforms import ModelInput

        model = self._model(model_path, data.label_names)
        model.model_input = ModelInput.from_dict(data.info["input"])
        t = self.training
        if t.lora is not None:
            return self._lora(model)
        if t.freeze_base:
            for name, param in model.named_parameters():
                param.requires_grad = model.is_head(name)
        return model

    def _lora(self, model: ImageClassifier) -> torch.nn.Module:
        from peft import LoraConfig, get_peft_model

        lora = self.training.lora
        assert lora is not None
        default = EFFNET_LORA_TARGETS if model.kind == "efficientnet-lite" else ["query", "value"]
        if model.kind == "efficientnet-lite":
            plain_pointwise(model)
        head = [p.removeprefix("net.").rstrip(".") for p in model.head_prefixes]
        config = LoraConfig(
            r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout, target_modules=lora.target_modules or default, modules_to_save=head
        )
        return get_peft_model(model, config)

    def first_epoch(self, name: str) -> int:
        """freezeBaseEpochs: the backbone's parameters train from epoch N+1, the head's from epoch 1."""
        n = self.training.freeze_base_epochs
        if n is None:
            return 1
        return 1 if ".".join(name.split(".")[:2]) in ("net._fc", "net.classifier") or name.startswith("net.head") else n + 1

    def collate(self, split: dict[str, np.ndarray], indices: np.ndarray, data: TaskData) -> dict[str, torch.Tensor]:
        import torch

        from graft.jobs.tasks.image_transforms import ModelInput

        model_input = ModelInput.from_dict(data.info["input"])
        training = split is data.train
        prep = self._preprocess(model_input, augment=training and self.spec.dataset.augmentation is not None)
        pixels = split["pixels"][indices]
        images = [p[:, :, 0] if p.shape[-1] == 1 else p for p in pixels]
        if training:
            views = [prep.augmented_image(img, self.epoch, int(i)) for img, i in zip(images, indices, strict=True)]
        else:
            from graft.jobs.tasks.image_transforms import _to_pil

            views = [_to_pil(img, model_input.channels) for img in images]
        batch = {"pixel_values": torch.stack([prep._tensor(v) for v in views]), "labels": torch.from_numpy(split["labels"][indices])}
        teacher = data.info.get("teacher")
        if teacher is not None and training:
            from graft.jobs.tasks.distill import teacher_pixels

            batch["teacher_pixel_values"] = teacher_pixels(views, model_input, ModelInput.from_dict(teacher["input"]), batch["pixel_values"])
        return batch

    def loss(self, model: Any, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        import torch.nn.functional as F

        logits = model(batch["pixel_values"]).float()
        d = self.spec.distillation
        if d is None or "teacher_pixel_values" not in batch:
            return F.cross_entropy(logits, batch["labels"])
        from graft.jobs.tasks.distill import distillation_loss, teacher_logits

        soft = teacher_logits(self, batch["teacher_pixel_values"])
        return distillation_loss(logits, soft, batch["labels"], d.temperature, d.alpha)

    def eval_sums(self, model: Any, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        import torch
        import torch.nn.functional as F

        logits = model(batch["pixel_values"]).float()
        labels = batch["labels"]
        valid = batch[VALID]
        weight = valid.to(torch.float64)
        losses = F.cross_entropy(logits, labels, reduction="none").to(torch.float64)
        n = logits.shape[-1]
        pairs = labels[valid] * n + logits.argmax(-1)[valid]
        confusion = torch.bincount(pairs, minlength=n * n).reshape(n, n).to(torch.float64)
        return {"loss": (losses * weight).sum(), "rows": weight.sum(), "confusion": confusion}

    def metrics(self, sums: dict[str, torch.Tensor]) -> dict[str, float]:
        from graft.jobs.tasks.text_classification import macro_f1

        rows = max(1.0, float(sums["rows"]))
        confusion = sums["confusion"].cpu()
        return {"eval_loss": float(sums["loss"]) / rows, "eval_accuracy": float(confusion.diag().sum()) / rows, "eval_f1": macro_f1(confusion)}

    def report(self, model_uri: str, data: TaskData) -> dict[str, Any] | None:
        """With distillation: teacher vs exported student on the validation split (result `distillation`)."""
        d = self.spec.distillation
        if d is None:
            return None
        from graft.jobs.sources import resolve_source
        from graft.jobs.tasks.distill import compare
        from graft.jobs.tasks.image_transforms import ModelInput

        student = resolve_source(model_uri, field="modelUri")
        return {"distillation": compare(d.teacher, student, data.validation, ModelInput.from_dict(data.info["input"]))}

    def export(self, model: torch.nn.Module, out: Path, model_path: Path, data: TaskData) -> None:
        import copy

        from graft.jobs.tasks.image_model import export_image_model

        plain: Any = model
        if hasattr(plain, "merge_and_unload"):
            plain = copy.deepcopy(plain).merge_and_unload()
        state = {k: (v.detach().float() if v.is_floating_point() else v.detach()).cpu() for k, v in plain.state_dict().items()}
        export_image_model(plain, state, data.label_names, out)
