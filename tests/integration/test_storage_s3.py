"""graft.storage against a real S3-compatible server (versitygw on loopback, testbed/s3server.py)."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest

from graft import storage
from graft.jobs.checkpoint import missing_files, write_manifest
from graft.jobs.export import EXPORT_META, export_best, prune_checkpoints
from testbed.s3server import S3Server

pytestmark = pytest.mark.integration


def test_small_files_round_trip_through_the_object_store(s3_bucket: str) -> None:
    uri = storage.join(s3_bucket, "ns", "job-01234567", storage.RESULT_FILE)

    storage.write_text(uri, '{"status": "succeeded"}')

    assert storage.exists(uri)
    assert json.loads(storage.read_text(uri)) == {"status": "succeeded"}


def test_an_unwritable_root_is_refused_naming_the_uri(s3_bucket: str) -> None:
    missing = "s3://no-such-bucket-here/root"
    with pytest.raises(storage.StorageError, match="storage s3://no-such-bucket-here/root is not writable"):
        storage.check_writable(missing)
    storage.check_writable(s3_bucket)  # the real bucket is fine


def test_wrong_credentials_are_refused(s3_server: S3Server, s3_bucket: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-the-secret")
    with pytest.raises(storage.StorageError, match="is not writable"):
        storage.check_writable(s3_bucket)


def test_removing_an_experiment_removes_only_that_jobs_runs(s3_bucket: str) -> None:
    mine = storage.job_dir(s3_bucket, "team-a", "job", "aaaaaaaa11")
    other = storage.job_dir(s3_bucket, "team-a", "job", "bbbbbbbb22")  # same name, re-created job
    for base in (mine, other):
        storage.write_text(storage.join(base, "runs", "exp", "trial", "ckpt.bin"), "x")
        storage.write_text(storage.join(base, storage.RESULT_FILE), "{}")

    assert storage.remove_experiment(mine)

    assert not storage.exists(storage.join(mine, "runs"))
    assert storage.exists(storage.join(mine, storage.RESULT_FILE))  # the result stays
    assert storage.exists(storage.join(other, "runs", "exp", "trial", "ckpt.bin"))
    assert not storage.remove_experiment(mine)  # nothing left to remove


def _local_checkpoint(root: Path) -> Path:
    (root / "hf").mkdir(parents=True)
    (root / "hf" / "config.json").write_text("{}")
    (root / "hf" / "model.safetensors").write_bytes(b"weights")
    write_manifest(root, rank=0, world=1)
    return root


def test_export_to_object_storage_copies_hf_and_writes_the_metadata_last(s3_bucket: str, tmp_path: Path) -> None:
    ckpt = _local_checkpoint(tmp_path / "ckpt")
    job = storage.join(s3_bucket, "ns", "job-12345678")

    uri = export_best(str(ckpt), job, {"checkpoint": str(ckpt)})

    assert uri == f"{job}/model"
    fs, path = storage.fsspec_filesystem(uri)
    assert sorted(p.rsplit("/", 1)[1] for p in fs.find(path)) == ["config.json", EXPORT_META, "model.safetensors"]


def test_prune_deletes_other_checkpoints_on_object_storage(s3_bucket: str) -> None:
    keep, other = storage.join(s3_bucket, "c", "keep"), storage.join(s3_bucket, "c", "other")
    for c in (keep, other):
        storage.write_text(storage.join(c, "shard.pt"), "x")

    removed = prune_checkpoints(keep, [keep, other], storage.join(s3_bucket, "c"))

    assert removed == [other]
    assert storage.exists(storage.join(keep, "shard.pt")) and not storage.exists(other)


def test_a_json_document_replaced_while_it_is_read_comes_back_whole(s3_bucket: str) -> None:
    uri = storage.join(s3_bucket, "ns", "job-01234567", "runs", "graft_progress.json")
    short, long = {"trials": {}}, {"trials": {str(i): {"epoch": i} for i in range(40)}}
    storage.write_text(uri, json.dumps(short))
    stop = threading.Event()

    def replace_again_and_again() -> None:
        while not stop.is_set():
            for doc in (long, short):
                storage.write_text(uri, json.dumps(doc))
                stop.wait(0.01)  # a busy writer; a plain read_text + json.loads is cut about 1 time in 20

    writer = threading.Thread(target=replace_again_and_again, daemon=True)
    writer.start()
    try:
        seen = [storage.read_json(uri) for _ in range(150)]
    finally:
        stop.set()
        writer.join(timeout=10)

    assert all(doc in (short, long) for doc in seen)


def test_a_checkpoint_cut_short_on_object_storage_is_found_by_its_manifest(s3_bucket: str, tmp_path: Path) -> None:
    ckpt = _local_checkpoint(tmp_path / "ckpt")
    stored = storage.join(s3_bucket, "ns", "job-12345678", "runs", "checkpoint_000000")
    for path in sorted(p for p in ckpt.rglob("*") if p.is_file()):
        data = path.read_bytes()
        storage.write_text(f"{stored}/{path.relative_to(ckpt).as_posix()}", data.decode()[:3] if path.name == "model.safetensors" else data.decode())

    assert missing_files(stored) == ["hf/model.safetensors (3 of 7 bytes)"]
