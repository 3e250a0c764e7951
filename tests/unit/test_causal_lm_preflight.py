"""Preflight for causal-LM jobs: GGUF model sources are accepted, GPU-only settings are refused on CPUs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from graft.api.errors import SpecError
from graft.api.spec import FineTuneJobSpec
from graft.jobs import preflight
from tests.llm_assets import MODEL_SOURCE, TRAIN_SOURCE

pytestmark = pytest.mark.unit


def spec(**training: Any) -> FineTuneJobSpec:
    return FineTuneJobSpec.model_validate(
        {"task": "causal-lm", "model": {"source": MODEL_SOURCE}, "dataset": {"source": TRAIN_SOURCE}, "tuning": {"metric": "eval_loss"}, "training": training}
    )


def errors(s: FineTuneJobSpec) -> str:
    try:
        preflight.check(s)
    except SpecError as exc:
        return str(exc)
    return ""


def test_a_gguf_model_file_passes_the_model_check() -> None:
    assert "spec.model.source" not in errors(spec())


def test_qlora_without_gpus_is_refused_with_the_fix() -> None:
    message = errors(spec(quantization="4bit"))
    assert "spec.training.quantization" in message and "GPU" in message


def test_fp16_without_gpus_is_refused() -> None:
    assert "spec.training.precision" in errors(spec(precision="fp16"))


def test_a_file_that_is_not_gguf_is_refused(tmp_path: Path) -> None:
    weights = tmp_path / "model.bin"
    weights.write_bytes(b"x")
    s = spec().model_copy(update={"model": spec().model.model_copy(update={"source": str(weights)})})
    assert "not a .gguf" in errors(s)
