"""The image examples run as shipped, the way their header comments say: the teacher first, then the
distillation job that names it by a path relative to the directory `graft run` starts in."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e
REPO = Path(__file__).resolve().parents[2]
GRAFT = [sys.executable, "-m", "graft", "run", "--plain", "--no-serve", "--num-cpus", "2"]


def _run(cwd: Path, run_dir: str, example: str) -> dict[str, object]:
    env = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run([*GRAFT, "--run-dir", run_dir, str(REPO / "examples" / example)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return dict(json.loads((cwd / run_dir / "result.json").read_text()))


def test_the_distillation_example_trains_a_smaller_student_of_the_image_example(tmp_path: Path) -> None:
    teacher = _run(tmp_path, "runs/fashion-mnist", "image-classification.yaml")
    student = _run(tmp_path, "runs/fashion-mnist-student", "distillation.yaml")
    assert teacher["status"] == student["status"] == "succeeded"
    sizes = student["distillation"]
    assert isinstance(sizes, dict) and sizes["studentParameters"] < sizes["teacherParameters"], sizes
