"""The image examples run as shipped, the way their header comments say: the teacher first, then the
distillation job that names it as `finetunejob://fashion-mnist`, found under `runs/` of the
directory `graft run` starts in."""

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


def _run(cwd: Path, example: str, name: str) -> dict[str, object]:
    """`graft run` of the example into its default run dir, runs/NAME-TIME; its result document."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run([*GRAFT, str(REPO / "examples" / example)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    (result,) = (cwd / "runs").glob(f"{name}-2*/result.json")
    return dict(json.loads(result.read_text()))


def test_the_distillation_example_trains_a_smaller_student_of_the_image_example(tmp_path: Path) -> None:
    teacher = _run(tmp_path, "image-classification.yaml", "fashion-mnist")
    student = _run(tmp_path, "distillation.yaml", "fashion-mnist-student")
    assert teacher["status"] == student["status"] == "succeeded"
    sizes = student["distillation"]
    assert isinstance(sizes, dict) and sizes["studentParameters"] < sizes["teacherParameters"], sizes
    assert sizes["teacher"] == teacher["modelUri"], (sizes["teacher"], teacher["modelUri"])
