"""Chaos: a Ray Train worker killed mid-epoch; the trial resumes from its latest checkpoint.

The run with the kill must end where an uninterrupted run with the same seed ends: the same
optimizer steps and (up to floating-point noise) the same final metrics.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path

import psutil
import pytest

from graft.api import FineTuneJob
from graft.jobs.checkpoint import META_FILE
from graft.jobs.entrypoint import run_job
from graft.jobs.events import JobEvent, TrialEpochEvent
from testbed.jobdocs import tiny_job, write_sentiment_jsonl

pytestmark = [pytest.mark.e2e, pytest.mark.chaos, pytest.mark.slow]

EPOCHS = 3


def train_workers() -> list[psutil.Process]:
    """Ray Train worker processes of this test session's own cluster (descendants of this process only)."""
    out = []
    for proc in psutil.Process(os.getpid()).children(recursive=True):
        try:
            if "RayTrainWorker" in " ".join(proc.cmdline()):
                out.append(proc)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return out


def kill_worker_once(after_epoch: int, delay_s: float, killed: list[int]) -> callable:  # type: ignore[valid-type]
    """An event sink that SIGKILLs the Train worker `delay_s` after epoch `after_epoch` is reported."""

    def kill() -> None:
        time.sleep(delay_s)
        for proc in train_workers():
            proc.send_signal(signal.SIGKILL)
            killed.append(proc.pid)

    def on_event(event: JobEvent) -> None:
        if isinstance(event, TrialEpochEvent) and event.epoch == after_epoch and not killed:
            threading.Thread(target=kill, daemon=True).start()

    return on_event


def job(minilm: Path, data: Path, name: str) -> FineTuneJob:
    return FineTuneJob.model_validate(
        tiny_job(
            minilm, data, name=name,
            training={"epochs": EPOCHS, "batchSize": 4, "maxStepsPerEpoch": 12, "learningRate": 5e-4, "maxFailures": 1},
            checkpoints={"numToKeep": 1},
        )
    )


def final_progress(checkpoint_uri: str) -> dict:
    return json.loads((Path(checkpoint_uri) / META_FILE).read_text())


def test_a_worker_killed_mid_epoch_resumes_and_ends_where_an_uninterrupted_run_ends(ray_cluster: dict, minilm_path: Path, tmp_path: Path) -> None:
    data = write_sentiment_jsonl(tmp_path / "data.jsonl", rows_per_label=40)
    killed: list[int] = []
    events: list[JobEvent] = []
    sink = kill_worker_once(after_epoch=1, delay_s=1.0, killed=killed)

    chaos = run_job(job(minilm_path, data, "chaos"), tmp_path / "chaos", on_event=lambda e: (events.append(e), sink(e)))
    clean = run_job(job(minilm_path, data, "clean"), tmp_path / "clean")

    assert killed, "no Train worker was found to kill"
    assert chaos.status == "succeeded", chaos.message
    resumed = final_progress(chaos.checkpoint_uri or "")
    assert resumed["progress"]["restarts"] == 1
    assert resumed["progress"]["epoch"] == EPOCHS
    assert resumed["progress"]["global_step"] == final_progress(clean.checkpoint_uri or "")["progress"]["global_step"]
    epochs_reported = [e.epoch for e in events if isinstance(e, TrialEpochEvent)]
    assert epochs_reported == [1, 2, 3]  # epoch 2 was interrupted, redone once, reported once
    last_chaos, last_clean = chaos.trials[0].history[-1], clean.trials[0].history[-1]
    assert last_chaos.eval_loss == pytest.approx(last_clean.eval_loss, rel=1e-3, abs=1e-4)
    assert last_chaos.train_loss == pytest.approx(last_clean.train_loss, rel=1e-3, abs=1e-4)
