"""Distillation (`spec.distillation`): a fine-tuned teacher's softened predictions train the student.

The student is `spec.model` (optionally cut to `studentLayers` blocks); the teacher is a Graft
result document (its `modelUri`) or an exported model directory with the same labels. The loss
(Hinton et al., 2015) is

    alpha * T^2 * KL(softmax(teacher / T) || softmax(student / T)) + (1 - alpha) * CE(student, labels)

on every training batch, with the teacher seeing the same augmented image as the student (its own
size and normalisation when they differ). After export, `compare` measures both models on the
validation split: size, accuracy and single-image latency, recorded in the result document.
"""

from __future__ import annotations

import json
import statistics
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from graft import storage
from graft.jobs.data import DataError
from graft.jobs.sources import SourceError, resolve_source

if TYPE_CHECKING:
    import torch

FIELD = "spec.distillation.teacher"


def teacher_dir(teacher: str) -> Path:
    """The teacher's model directory: `teacher` itself, or the `modelUri` of a result document."""
    return model_dir_of(teacher, FIELD)


def model_dir_of(source: str, field: str) -> Path:
    """A model directory from a path/URI to one, or to a Graft result document (its `modelUri`)."""
    try:
        path = resolve_source(source, field=field, kind="model")
    except SourceError as exc:
        raise DataError(exc.field, exc.message) from exc
    if not path.is_file():
        return path
    try:
        doc = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DataError(field, f"{path} is neither a model directory nor a JSON result document: {exc}") from exc
    uri = doc.get("modelUri") if isinstance(doc, dict) else None
    if not isinstance(doc, dict) or doc.get("status") != "succeeded" or not uri:
        status = doc.get("status") if isinstance(doc, dict) else None
        raise DataError(field, f"result document {path} has no model (status {status!r}); run that job first")
    home = source.rstrip("/").rsplit("/", 1)[0] if storage.is_remote(source) else str(path.parent)
    if not isinstance(uri, str) or not storage.inside(uri, home):
        raise DataError(field, f"result document {source} names modelUri {uri!r}, outside its own directory {home} "
                        "(after resolving links); a result names only the model its job exported beside it")
    try:
        return resolve_source(uri, field=field, kind="model")
    except SourceError as exc:
        raise DataError(field, f"modelUri {uri!r} of {source}: {exc.message}") from exc


def load_teacher(teacher: str) -> Any:
    from graft.jobs.tasks.image_model import GRAFT_MODEL_FILE, load_exported

    path = teacher_dir(teacher)
    if not (path / GRAFT_MODEL_FILE).is_file():
        raise DataError(FIELD, f"{path} is not an exported image model (no {GRAFT_MODEL_FILE}); give a Graft result.json or model/ directory")
    model = load_exported(path)
    model.eval()
    return model


def teacher_summary(teacher: str, label_names: list[str]) -> dict[str, Any]:
    """What the workers need to know about the teacher (checked against the dataset's labels)."""
    model = load_teacher(teacher)
    meta = json.loads((teacher_dir(teacher) / "graft_model.json").read_text())
    if list(meta["label_names"]) != list(label_names):
        raise DataError(FIELD, f"the teacher's labels {meta['label_names']} differ from the dataset's {label_names}; distil on the teacher's own label set")
    return {"model_dir": str(teacher_dir(teacher)), "input": model.model_input.to_dict(), "parameters": model.num_parameters()}


def teacher_pixels(views: list[Any], student_input: Any, teacher_input: Any, student_pixels: torch.Tensor) -> torch.Tensor:
    """The teacher's input for the same augmented images (the student's tensor when the inputs agree)."""
    if teacher_input == student_input:
        return student_pixels
    import torch

    from graft.jobs.tasks.image_transforms import Preprocess, _resize_center

    prep = Preprocess(teacher_input)
    return torch.stack([prep._tensor(_resize_center(v.convert("RGB" if teacher_input.channels == 3 else "L"), teacher_input.image_size)) for v in views])


def teacher_logits(task: Any, pixels: torch.Tensor) -> torch.Tensor:
    """The teacher's logits (loaded once per worker, frozen, on the batch's device)."""
    import torch

    assert task.spec.distillation is not None
    if task._teacher is None:
        task._teacher = load_teacher(task.spec.distillation.teacher)
        for p in task._teacher.parameters():
            p.requires_grad = False
    teacher = task._teacher.to(pixels.device)
    with torch.no_grad():
        return teacher(pixels.float()).float()


def distillation_loss(student: torch.Tensor, teacher: torch.Tensor, labels: torch.Tensor, temperature: float, alpha: float) -> torch.Tensor:
    import torch.nn.functional as F

    t = temperature
    soft = F.kl_div(F.log_softmax(student / t, dim=-1), F.log_softmax(teacher / t, dim=-1), reduction="batchmean", log_target=True) * (t * t)
    if alpha >= 1.0:
        return soft
    return alpha * soft + (1.0 - alpha) * F.cross_entropy(student, labels)


def _accuracy_and_latency(model: Any, pixels: Any, labels: Any, prep: Any, repeats: int = 20) -> tuple[float, float]:
    import torch

    from graft.jobs.tasks.image_transforms import _to_pil

    model.eval()
    channels = prep.model_input.channels
    tensors = [prep._tensor(_to_pil(p[:, :, 0] if p.shape[-1] == 1 else p, channels)) for p in pixels]
    correct = 0
    with torch.inference_mode():
        for i in range(0, len(tensors), 64):
            logits = model(torch.stack(tensors[i : i + 64]))
            correct += int((logits.argmax(-1) == torch.from_numpy(labels[i : i + 64])).sum())
        one = tensors[0].unsqueeze(0)
        model(one)  # warm-up
        times = []
        for _ in range(repeats):
            started = time.perf_counter()
            model(one)
            times.append(time.perf_counter() - started)
    return correct / max(1, len(tensors)), 1000 * statistics.median(times)


def compare(teacher: str, student_dir: Path, validation: dict[str, Any], student_input: Any) -> dict[str, float | int | str]:
    """Teacher vs exported student on the validation split: parameters, accuracy, median ms per image."""
    import torch

    from graft.jobs.tasks.image_model import load_exported
    from graft.jobs.tasks.image_transforms import Preprocess

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # latency of one image on one core, comparable across machines' loads
    try:
        t_model = load_teacher(teacher)
        s_model = load_exported(student_dir)
        t_acc, t_ms = _accuracy_and_latency(t_model, validation["pixels"], validation["labels"], Preprocess(t_model.model_input))
        s_acc, s_ms = _accuracy_and_latency(s_model, validation["pixels"], validation["labels"], Preprocess(student_input))
    finally:
        torch.set_num_threads(threads)
    return {
        "teacher": str(teacher_dir(teacher)),
        "teacher_parameters": t_model.num_parameters(),
        "student_parameters": s_model.num_parameters(),
        "teacher_accuracy": t_acc,
        "student_accuracy": s_acc,
        "teacher_ms_per_image": round(t_ms, 3),
        "student_ms_per_image": round(s_ms, 3),
    }
