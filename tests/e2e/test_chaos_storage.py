"""Chaos: the object store fills up mid-run. The job fails with a reason and a message naming the
storage problem (a real S3 server on a small tmpfs answers 507 InsufficientStorage)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from graft import storage
from graft.api import FineTuneJob
from graft.jobs.entrypoint import STORAGE_FAILURE, TrainingFailed, run_job
from tests.e2e.conftest import tiny_job
from tests.s3server import S3Server

pytestmark = [pytest.mark.e2e, pytest.mark.chaos]


@pytest.fixture
def small_store(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A real S3 server whose disk (tmpfs) holds 40 MB: the probe and small files fit, a checkpoint does not."""
    server = S3Server(size_limit_mb=40).start()
    try:
        for key, value in server.env.items():
            monkeypatch.setenv(key, value)
        yield server.create_bucket("small")
    finally:
        server.stop()


def test_storage_full_mid_run_fails_the_job_naming_the_storage(ray_cluster: dict, minilm_path: Path, sentiment_jsonl: Path, tmp_path: Path, small_store: str) -> None:
    root = f"{small_store}/graft"
    storage.write_text(f"{root}/other/job-11111111/model/config.json", "{}")  # another job's export
    doc = tiny_job(minilm_path, sentiment_jsonl, name="full", checkpoints={"storage": root, "numToKeep": 1})
    doc["metadata"].update(namespace="ns", uid="f011f011-0000-4000-8000-000000000000")

    with pytest.raises(TrainingFailed) as info:
        run_job(FineTuneJob.model_validate(doc), tmp_path / "run")

    result = info.value.result
    assert result.status == "failed" and result.reason == STORAGE_FAILURE
    assert f"storage {root}/ns/full-f011f011 failed" in result.message
    assert "No space left on device" in result.message or "InsufficientStorage" in result.message
    assert result.model_uri is None
    assert storage.read_text(f"{root}/other/job-11111111/model/config.json") == "{}"  # untouched
