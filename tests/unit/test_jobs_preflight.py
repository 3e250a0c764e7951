"""Preflight fails fast, before any Ray process, with messages that name the field and the problem."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest

from graft.api import SpecError
from graft.api.load import parse_spec
from graft.jobs import preflight

pytestmark = pytest.mark.unit


@pytest.fixture
def model_dir(tmp_path: Path) -> Path:
    d = tmp_path / "model"
    d.mkdir()
    (d / "config.json").write_text(json.dumps({"model_type": "bert"}))
    return d


@pytest.fixture
def data_file(tmp_path: Path) -> Path:
    p = tmp_path / "train.jsonl"
    p.write_text("\n".join(json.dumps({"text": f"t{i}", "label": i % 2}) for i in range(20)))
    return p


def spec_of(model: Path | str, data: Path | str, **extra: Any) -> Any:
    doc: dict[str, Any] = {"model": {"source": str(model)}, "dataset": {"source": str(data)}}
    doc.update(extra)
    return parse_spec(doc)


def errors(spec: Any) -> dict[str, str]:
    with pytest.raises(SpecError) as info:
        preflight.check(spec)
    return {e.path: e.message for e in info.value.errors}


def test_a_runnable_spec_passes(model_dir: Path, data_file: Path) -> None:
    preflight.check(spec_of(model_dir, data_file))


def test_missing_dataset_file_is_named(model_dir: Path, tmp_path: Path) -> None:
    missing = tmp_path / "absent.jsonl"
    found = errors(spec_of(model_dir, missing))
    assert str(missing) in found["spec.dataset.source"] and "does not exist" in found["spec.dataset.source"]


def test_absent_label_field_is_named_with_the_columns(model_dir: Path, data_file: Path) -> None:
    found = errors(spec_of(model_dir, data_file, dataset={"source": str(data_file), "labelField": "stars"}))
    assert "'stars'" in found["spec.dataset.labelField"] and "columns present: text, label" in found["spec.dataset.labelField"]


def test_missing_model_path_is_named(data_file: Path, tmp_path: Path) -> None:
    missing = tmp_path / "no-model"
    found = errors(spec_of(missing, data_file))
    assert str(missing) in found["spec.model.source"]


def test_model_dir_without_config_json_is_rejected(data_file: Path, tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    found = errors(spec_of(tmp_path / "empty", data_file))
    assert "no config.json" in found["spec.model.source"]


def test_model_and_dataset_problems_are_reported_together(tmp_path: Path) -> None:
    found = errors(spec_of(tmp_path / "m", tmp_path / "d.jsonl"))
    assert {"spec.model.source", "spec.dataset.source"} <= set(found)


def test_fp16_without_gpus_is_an_error(model_dir: Path, data_file: Path) -> None:
    found = errors(spec_of(model_dir, data_file, training={"precision": "fp16"}))
    assert "fp16 needs a GPU" in found["spec.training.precision"]


def test_fp16_with_gpus_passes_preflight(model_dir: Path, data_file: Path) -> None:
    preflight.check(spec_of(model_dir, data_file, training={"precision": "fp16"}, resources={"gpusPerWorker": 1}))


def test_searching_lora_without_lora_is_an_error(model_dir: Path, data_file: Path) -> None:
    found = errors(spec_of(model_dir, data_file, tuning={"searchSpace": {"lora.r": {"type": "choice", "values": [4, 8]}}}))
    assert "spec.training.lora" in found["spec.tuning.searchSpace.lora.r"]


def test_preflight_starts_no_ray_and_loads_no_torch(model_dir: Path, data_file: Path) -> None:
    import subprocess

    code = (
        "import sys, json; from graft.api.load import parse_spec; from graft.jobs import preflight; "
        f"preflight.check(parse_spec({{'model': {{'source': {str(model_dir)!r}}}, 'dataset': {{'source': {str(data_file)!r}}}}})); "
        "print(json.dumps([m for m in ('ray', 'torch', 'transformers', 'deepspeed') if m in sys.modules]))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout) == []
