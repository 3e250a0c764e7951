"""Fast checks that a FineTuneJob can run, before any Ray process or model weights are touched.

`graft run` calls `check(spec)` so a wrong path or field fails in a second with a message naming
the spec field, instead of minutes later inside a Ray worker.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from graft.api.errors import FieldError, SpecError
from graft.api.spec import FineTuneJobSpec
from graft.jobs.data import DataError
from graft.jobs.sources import SourceError, resolve_source
from graft.jobs.tasks import Task, UnknownTask, get_task


@dataclass
class Preflight:
    """What preflight found: the task, the local model directory and the loaded (raw) dataset."""

    task: Task
    model_path: Path
    dataset: Any  # what task.load() returned; task.prepare() preprocesses it
    warnings: list[str] = field(default_factory=list)  # the job runs, but slower or saving less than it could


def _model_errors(spec: FineTuneJobSpec) -> tuple[Path | None, list[FieldError]]:
    try:
        path = resolve_source(spec.model.source, field="spec.model.source", kind="model", revision=spec.model.revision)
    except SourceError as exc:
        return None, [FieldError(exc.field, exc.message)]
    if spec.task == "causal-lm":
        from graft.jobs.tasks.lm_loading import ModelSourceError, locate

        try:
            _, gguf = locate(path)  # a Hugging Face directory, or a GGUF file (dequantized on load)
        except ModelSourceError as err:
            return None, [FieldError("spec.model.source", str(err))]
        if gguf is not None:
            return path, []
    if spec.task == "image-classification":
        from graft.jobs.tasks.image_model import image_model_error

        error = image_model_error(path)
        return (None, [FieldError("spec.model.source", error)]) if error else (path, [])
    config = path / "config.json"
    if not path.is_dir() or not config.is_file():
        return None, [FieldError("spec.model.source", f"{str(path)!r} is not a Hugging Face model directory (no config.json in it)")]
    try:
        json.loads(config.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        return None, [FieldError("spec.model.source", f"{str(config)!r} is not valid JSON: {exc}")]
    return path, []


def _spec_errors(spec: FineTuneJobSpec) -> list[FieldError]:
    errors: list[FieldError] = []
    training = spec.training
    if training.precision == "fp16" and spec.resources.gpus_per_worker == 0:
        errors.append(
            FieldError(
                "spec.training.precision",
                "fp16 needs a GPU and spec.resources.gpusPerWorker is 0 (DeepSpeed refuses fp16 on CPUs); "
                "use bf16, fp32 or auto, or request GPUs",
            )
        )
    if training.quantization == "4bit" and spec.resources.gpus_per_worker == 0:
        errors.append(
            FieldError(
                "spec.training.quantization",
                "4bit (QLoRA) loads the base model with bitsandbytes, which needs a CUDA GPU, and spec.resources.gpusPerWorker is 0; "
                "use quantization: none (LoRA in bf16 works on CPUs), or request GPUs",
            )
        )
    for key in spec.tuning.search_space:
        if key.startswith("lora.") and training.lora is None:
            errors.append(FieldError(f"spec.tuning.searchSpace.{key}", "searching a LoRA setting needs spec.training.lora to be set"))
    if spec.distillation is not None:
        errors += _distillation_errors(spec)
    if spec.tuning.num_trials > 1 and not spec.tuning.search_space:
        errors.append(FieldError("spec.tuning.numTrials", f"{spec.tuning.num_trials} trials with an empty searchSpace would train the same config repeatedly; add a searchSpace or set numTrials: 1"))
    return errors


def warnings(spec: FineTuneJobSpec, flags: set[str] | None = None) -> list[str]:
    """What runs but slowly or wastefully: emulated bf16, an ASHA that cannot stop anything."""
    from graft.jobs.deepspeed_config import cpu_has_native_bf16

    out: list[str] = []
    if spec.training.precision == "bf16" and spec.resources.gpus_per_worker == 0 and not cpu_has_native_bf16(flags):
        out.append(
            "spec.training.precision: bf16 on this CPU is emulated (no AVX-512 BF16 or AMX) and several times slower than fp32; "
            "use precision: auto (fp32 here) unless you need bf16"
        )
    sched = spec.tuning.scheduler
    if sched.type == "asha" and spec.tuning.num_trials > 1:
        from graft.jobs.search_space import asha_rungs

        top = max_epochs(spec)
        if not asha_rungs(top, sched.grace_period, sched.reduction_factor):
            out.append(
                f"spec.tuning.scheduler: ASHA can stop a trial only before its last epoch, and gracePeriod {sched.grace_period} >= "
                f"{top} epoch(s) leaves no rung: every trial runs to the end; lower gracePeriod or raise training.epochs"
            )
    return out


def concurrency_warning(spec: FineTuneJobSpec, cluster: dict[str, float]) -> str | None:
    """Whether `maxConcurrentTrials` trials fit on the cluster's CPUs/GPUs at once (None when they do)."""
    res, want = spec.resources, spec.tuning.max_concurrent_trials
    want = min(want, spec.tuning.num_trials)
    if want <= 1:
        return None
    fit = int(cluster.get("CPU", 0) // (res.workers * res.cpus_per_worker))
    if res.gpus_per_worker > 0:
        fit = min(fit, int(cluster.get("GPU", 0) // (res.workers * res.gpus_per_worker)))
    if fit >= want:
        return None
    return (
        f"spec.tuning.maxConcurrentTrials: {want} trials at once need {want * res.workers * res.cpus_per_worker:g} CPUs "
        f"({res.workers} worker(s) x {res.cpus_per_worker:g} CPU each); the Ray cluster has {cluster.get('CPU', 0):g}, "
        f"so at most {max(fit, 1)} run at a time"
    )


def max_epochs(spec: FineTuneJobSpec) -> int:
    """The most epochs any trial can run (epochs may itself be searched)."""
    param = spec.tuning.search_space.get("epochs")
    if param is None:
        return spec.training.epochs
    if param.type == "choice":
        return max(int(v) for v in (param.values or [spec.training.epochs]))
    return int(param.high or spec.training.epochs)


def _distillation_errors(spec: FineTuneJobSpec) -> list[FieldError]:
    assert spec.distillation is not None
    if spec.task != "image-classification":
        return [FieldError("spec.distillation", f"distillation is implemented for image-classification, not {spec.task}; remove spec.distillation")]
    from graft.jobs.tasks.distill import FIELD, model_dir_of
    from graft.jobs.tasks.image_model import image_model_error

    try:
        teacher = model_dir_of(spec.distillation.teacher, FIELD)
    except DataError as exc:
        return [FieldError(exc.field, exc.message)]
    error = image_model_error(teacher, exported=True)
    return [FieldError(FIELD, error)] if error else []


def inspect(spec: FineTuneJobSpec) -> Preflight:
    """Run every check; raise one SpecError listing every problem, or return what was found."""
    errors = _spec_errors(spec)
    model_path, model_errors = _model_errors(spec)
    errors += model_errors
    task: Task | None = None
    dataset: Any = None
    try:
        task = get_task(spec)
        dataset = task.load()
    except DataError as exc:
        errors.append(FieldError(exc.field, exc.message))
    except UnknownTask as exc:
        errors.append(FieldError("spec.task", str(exc)))
    if errors:
        raise SpecError(errors)
    assert model_path is not None and dataset is not None and task is not None
    return Preflight(task=task, model_path=model_path, dataset=dataset, warnings=warnings(spec))


def check(spec: FineTuneJobSpec) -> None:
    """Raise `graft.api.SpecError` (with one FieldError per problem) if the job cannot run."""
    inspect(spec)
