"""Exporting the best checkpoint's Hugging Face directory and pruning the other checkpoints."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from graft.jobs.checkpoint import manifest_file, missing_files, write_manifest
from graft.jobs.export import EXPORT_META, export_best, model_uri, prune_checkpoints
from graft.storage import StorageError

pytestmark = pytest.mark.unit


def checkpoint(root: Path, name: str, weights: bytes = b"w") -> Path:
    ckpt = root / name
    (ckpt / "hf").mkdir(parents=True)
    (ckpt / "hf" / "config.json").write_text(json.dumps({"id2label": {"0": "neg", "1": "pos"}}))
    (ckpt / "hf" / "model.safetensors").write_bytes(weights)
    (ckpt / "deepspeed").mkdir()
    (ckpt / "deepspeed" / "optim_states.pt").write_bytes(b"big")
    write_manifest(ckpt, rank=0, world=1)
    return ckpt


def test_export_copies_only_the_hf_directory_with_metadata(tmp_path: Path) -> None:
    ckpt = checkpoint(tmp_path / "ckpts", "best")
    uri = export_best(str(ckpt), str(tmp_path / "storage" / "job"), {"trial_id": "t1"})
    assert uri == model_uri(str(tmp_path / "storage" / "job")) == str((tmp_path / "storage" / "job" / "model").resolve())
    assert sorted(p.name for p in Path(uri).iterdir()) == ["config.json", EXPORT_META, "model.safetensors"]
    assert json.loads((Path(uri) / EXPORT_META).read_text()) == {"trial_id": "t1"}


@pytest.mark.tenancy
def test_a_second_export_never_overwrites_the_first(tmp_path: Path) -> None:
    job_dir = str(tmp_path / "storage" / "job")
    first = export_best(str(checkpoint(tmp_path / "a", "c", b"old")), job_dir, {})
    uri = export_best(str(checkpoint(tmp_path / "b", "c", b"new")), job_dir, {})
    assert uri != first and Path(uri).name == "model-2"
    assert (Path(first) / "model.safetensors").read_bytes() == b"old"  # what an endpoint may be serving
    assert (Path(uri) / "model.safetensors").read_bytes() == b"new"
    assert sorted(p.name for p in (tmp_path / "storage" / "job").iterdir()) == ["model", "model-2"]


@pytest.mark.tenancy
def test_a_second_fsspec_export_never_overwrites_the_first(tmp_path: Path) -> None:
    import fsspec

    first = export_best(str(checkpoint(tmp_path / "a", "c", b"old")), "memory://graft-twice/job", {})
    second = export_best(str(checkpoint(tmp_path / "b", "c", b"new")), "memory://graft-twice/job", {})
    fs = fsspec.filesystem("memory")
    assert (first, second) == ("memory://graft-twice/job/model", "memory://graft-twice/job/model-2")
    assert fs.cat("/graft-twice/job/model/model.safetensors") == b"old"


def test_a_later_attempt_exporting_the_same_checkpoint_gets_the_first_export(tmp_path: Path) -> None:
    job_dir = str(tmp_path / "storage" / "job")
    ckpt = str(checkpoint(tmp_path / "a", "c"))
    first = export_best(ckpt, job_dir, {"checkpoint": ckpt})

    again = export_best(ckpt, job_dir, {"checkpoint": ckpt})  # a resumed attempt of the same job

    assert again == first
    assert sorted(p.name for p in (tmp_path / "storage" / "job").iterdir()) == ["model"]


def test_export_without_hf_directory_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "bare").mkdir()
    write_manifest(tmp_path / "bare", rank=0, world=1)  # whole, but no epoch of it was the best
    with pytest.raises(FileNotFoundError, match="no Hugging Face export"):
        export_best(str(tmp_path / "bare"), str(tmp_path / "storage" / "job"), {})


def test_export_to_an_fsspec_uri(tmp_path: Path) -> None:
    import fsspec

    uri = export_best(str(checkpoint(tmp_path, "c")), "memory://graft-export/job", {"k": 1})
    fs = fsspec.filesystem("memory")
    assert uri == "memory://graft-export/job/model"
    assert fs.cat("/graft-export/job/model/model.safetensors") == b"w"
    assert json.loads(fs.cat("/graft-export/job/model/" + EXPORT_META)) == {"k": 1}


def test_prune_keeps_the_best_and_removes_the_rest(tmp_path: Path) -> None:
    best, other = checkpoint(tmp_path, "best"), checkpoint(tmp_path, "other")
    removed = prune_checkpoints(str(best), [str(best), str(other), str(tmp_path / "gone")], str(tmp_path))
    assert removed == [str(other.resolve())]
    assert best.exists() and not other.exists()


def test_a_whole_checkpoint_misses_nothing(tmp_path: Path) -> None:
    assert missing_files(str(checkpoint(tmp_path, "c"))) == []


def test_a_checkpoint_missing_a_listed_file_is_not_exported_and_the_file_is_named(tmp_path: Path) -> None:
    ckpt = checkpoint(tmp_path / "ckpts", "cut")
    (ckpt / "hf" / "model.safetensors").unlink()  # the upload that failed on a full store

    with pytest.raises(StorageError, match=r"incomplete on storage .*hf/model.safetensors missing"):
        export_best(str(ckpt), str(tmp_path / "storage" / "job"), {})
    assert not (tmp_path / "storage" / "job" / "model").exists()


def test_a_file_cut_short_counts_as_missing_with_its_sizes(tmp_path: Path) -> None:
    ckpt = checkpoint(tmp_path, "short", weights=b"0123456789")
    (ckpt / "hf" / "model.safetensors").write_bytes(b"0123")

    assert missing_files(str(ckpt)) == ["hf/model.safetensors (4 of 10 bytes)"]


def test_a_rank_whose_manifest_never_arrived_is_named(tmp_path: Path) -> None:
    ckpt = checkpoint(tmp_path, "two-ranks")
    (ckpt / manifest_file(0)).unlink()
    (ckpt / "rng-1.pt").write_bytes(b"r")
    write_manifest(ckpt, rank=1, world=2)  # rank 1 uploaded; rank 0's manifest is lost

    assert missing_files(str(ckpt)) == [manifest_file(0)]
