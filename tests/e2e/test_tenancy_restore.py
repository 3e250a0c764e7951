"""Hostile tenant, on a real local Ray: a Tune experiment changed in the job's storage between two
attempts is not restored (Ray would unpickle it), while an untouched one is. The real MiniLM, one
trial of one short epoch; the second attempt of the untouched job only restores and skips."""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import pytest

from graft import storage
from graft.api import FineTuneJob
from graft.jobs.entrypoint import run_job
from graft.jobs.events import JobEvent, JobResumedEvent
from graft.jobs.signing import MANIFEST_FILE, state_key
from graft.jobs.state_signer import TUNER_FILE
from testbed.jobdocs import tiny_job

pytestmark = [pytest.mark.e2e, pytest.mark.tenancy]


class Payload:
    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self) -> tuple[object, tuple[str, str]]:
        return open, (self.marker, "w")


def _job(minilm_path: Path, data: Path, tmp_path: Path, name: str) -> FineTuneJob:
    doc: dict[str, Any] = tiny_job(minilm_path, data, name=name, training={"maxStepsPerEpoch": 2},
                                   checkpoints={"storage": str(tmp_path / "storage"), "numToKeep": 1})
    doc["metadata"].update({"namespace": "team-a", "uid": f"{name}-0000-4000-8000-000000000001"})
    return FineTuneJob.model_validate(doc)


def _experiment(job: FineTuneJob, tmp_path: Path) -> Path:
    uid = job.metadata.uid_or_empty()
    root = storage.job_dir(str(tmp_path / "storage"), "team-a", job.metadata.name, uid)
    return Path(root) / storage.RUNS_DIR / f"{job.metadata.name}-{uid[:8]}"


def _resumes(job: FineTuneJob, tmp_path: Path) -> list[JobResumedEvent]:
    events: list[JobEvent] = []
    result = run_job(job, tmp_path / "run-2", on_event=events.append)
    assert result.status == "succeeded", result.message
    return [e for e in events if isinstance(e, JobResumedEvent)]


def test_an_untouched_experiment_is_restored_on_the_next_attempt(ray_cluster: dict, minilm_path: Path, sentiment_jsonl: Path, tmp_path: Path) -> None:
    job = _job(minilm_path, sentiment_jsonl, tmp_path, "genuine")
    first = run_job(job, tmp_path / "run-1")
    assert (_experiment(job, tmp_path) / MANIFEST_FILE).is_file()
    [resumed] = _resumes(job, tmp_path)
    assert resumed.restored and resumed.trials_skipped == [first.trials[0].trial_id]


def test_the_state_key_never_reaches_the_jobs_storage(ray_cluster: dict, minilm_path: Path, sentiment_jsonl: Path, tmp_path: Path) -> None:
    """Tune pickles its callbacks and Ray Train its run config next to the experiment: the key is in neither."""
    job = _job(minilm_path, sentiment_jsonl, tmp_path, "leak")
    run_job(job, tmp_path / "run-1")
    key = state_key()
    leaked = [p for p in (tmp_path / "storage").rglob("*") if p.is_file() and key in p.read_bytes()]
    assert leaked == []


def test_a_planted_tuner_pkl_is_not_unpickled_and_the_attempt_starts_over(
        ray_cluster: dict, minilm_path: Path, sentiment_jsonl: Path, tmp_path: Path) -> None:
    job = _job(minilm_path, sentiment_jsonl, tmp_path, "planted")
    run_job(job, tmp_path / "run-1")
    marker = tmp_path / "pwned"
    (_experiment(job, tmp_path) / TUNER_FILE).write_bytes(pickle.dumps(Payload(marker)))
    [resumed] = _resumes(job, tmp_path)
    assert not resumed.restored and resumed.trials_skipped == []
    assert not marker.exists()
