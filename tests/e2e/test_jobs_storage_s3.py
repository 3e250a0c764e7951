"""A job whose checkpoints, progress, result and model live on a real S3-compatible server."""

from __future__ import annotations

from pathlib import Path

import pytest

from graft import storage
from graft.api import FineTuneJob
from graft.jobs.entrypoint import run_job
from testbed.jobdocs import tiny_job

pytestmark = pytest.mark.e2e

UID = "5e1f00d5-0000-4000-8000-000000000001"


def _checkpoint_dirs(train_root: str) -> dict[str, list[str]]:
    """Ray Train run name -> its checkpoint directories, read from the bucket."""
    fs, path = storage.fsspec_filesystem(train_root)
    out: dict[str, list[str]] = {}
    for run in fs.ls(path, detail=False):
        entries = fs.ls(run, detail=True)  # checkpoint_<time>/ dirs beside checkpoint_manager_snapshot.json
        out[run.rsplit("/", 1)[1]] = sorted(e["name"] for e in entries if e["type"] == "directory" and e["name"].rsplit("/", 1)[1].startswith("checkpoint_"))
    return out


def test_checkpoints_model_and_retention_on_object_storage(ray_cluster: dict, minilm_path: Path, sentiment_jsonl: Path, tmp_path: Path, s3_bucket: str) -> None:
    root = f"{s3_bucket}/graft"
    doc = tiny_job(
        minilm_path, sentiment_jsonl, name="s3job",
        training={"epochs": 2, "maxStepsPerEpoch": 2},
        tuning={"numTrials": 2, "maxConcurrentTrials": 1, "scheduler": {"type": "fifo"}, "searchSpace": {"learningRate": {"type": "choice", "values": [1e-3, 2e-3]}}},
        checkpoints={"storage": root, "numToKeep": 1},
    )
    doc["metadata"].update(namespace="team-a", uid=UID)
    job = FineTuneJob.model_validate(doc)

    result = run_job(job, tmp_path / "run")

    job_dir = f"{root}/team-a/s3job-{UID[:8]}"
    assert result.status == "succeeded", result.message
    assert result.model_uri == f"{job_dir}/model"
    assert storage.exists(f"{job_dir}/model/config.json") and storage.exists(f"{job_dir}/model/model.safetensors")
    assert result.checkpoint_uri and result.checkpoint_uri.startswith(f"{job_dir}/runs/s3job-{UID[:8]}/train/")
    assert storage.exists(f"{job_dir}/runs/s3job-{UID[:8]}/graft_progress.json")
    per_run = _checkpoint_dirs(f"{job_dir}/runs/s3job-{UID[:8]}/train")
    assert len(per_run) == 2  # one Ray Train run per trial
    best_run = next(r for r in per_run if result.best_trial_id and r.endswith(result.best_trial_id))
    assert len(per_run[best_run]) == 1  # numToKeep: 1, enforced by Ray on the object store
    assert all(not dirs for run, dirs in per_run.items() if run != best_run)  # other trials pruned after export
    assert result.attempt == 1 and result.resumes == [] and result.epochs_trained == 4
