"""Exporting the best checkpoint's Hugging Face directory and pruning the other checkpoints."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from graft.jobs.export import EXPORT_META, export_best, model_uri, prune_checkpoints

pytestmark = pytest.mark.unit


def checkpoint(root: Path, name: str, weights: bytes = b"w") -> Path:
    ckpt = root / name
    (ckpt / "hf").mkdir(parents=True)
    (ckpt / "hf" / "config.json").write_text(json.dumps({"id2label": {"0": "neg", "1": "pos"}}))
    (ckpt / "hf" / "model.safetensors").write_bytes(weights)
    (ckpt / "deepspeed").mkdir()
    (ckpt / "deepspeed" / "optim_states.pt").write_bytes(b"big")
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
    removed = prune_checkpoints(str(best), [str(best), str(other), str(tmp_path / "gone")])
    assert removed == [str(other.resolve())]
    assert best.exists() and not other.exists()
