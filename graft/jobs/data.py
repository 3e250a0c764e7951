"""Load a text-classification dataset from a spec: files (jsonl/csv/parquet) or a hub dataset.

The result is plain Python lists (texts and label ids) plus the label names, small enough to
ship to every Ray Train worker through the object store.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from graft.api.spec import DatasetSpec
from graft.jobs.sources import SourceError, SpecFieldError, hub_dataset_id, is_hub_source, resolve_source

if TYPE_CHECKING:
    import pandas as pd

FORMATS = {".jsonl": "jsonl", ".json": "jsonl", ".ndjson": "jsonl", ".csv": "csv", ".parquet": "parquet", ".pq": "parquet"}


class DataError(SpecFieldError):
    """A dataset problem, naming the spec field it comes from."""


@dataclass
class LoadedDataset:
    train_texts: list[str]
    train_labels: list[int]
    val_texts: list[str]
    val_labels: list[int]
    label_names: list[str]
    stratified: bool = False
    sources: dict[str, str] = field(default_factory=dict)

    @property
    def num_labels(self) -> int:
        return len(self.label_names)

    def summary(self) -> dict[str, Any]:
        return {
            "train": len(self.train_texts),
            "validation": len(self.val_texts),
            "labels": self.label_names,
            "stratified": self.stratified,
        }


def detect_format(path: Path, declared: str, field_path: str) -> str:
    if declared not in ("auto", "hub"):
        return declared
    fmt = FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise DataError(field_path, f"cannot tell the format of {str(path)!r} from its suffix; set spec.dataset.format to jsonl, csv or parquet")
    return fmt


def read_table(source: str, spec: DatasetSpec, field_path: str) -> tuple[pd.DataFrame, str]:
    """The raw table behind `source` and a short description of where it came from."""
    import pandas as pd

    if is_hub_source(source) or spec.format == "hub":
        return _read_hub(source, spec, field_path), source
    try:
        path = resolve_source(source, field=field_path, kind="dataset")
    except SourceError as exc:
        raise DataError(exc.field, exc.message) from exc
    if path.is_dir():
        raise DataError(field_path, f"{str(path)!r} is a directory; point at one jsonl, csv or parquet file")
    fmt = detect_format(path, spec.format, "spec.dataset.format")
    try:
        if fmt == "jsonl":
            df = pd.read_json(path, lines=True)
        elif fmt == "csv":
            df = pd.read_csv(path)
        else:
            df = pd.read_parquet(path)
    except (ValueError, OSError, UnicodeDecodeError) as exc:
        raise DataError(field_path, f"cannot read {str(path)!r} as {fmt}: {exc}") from exc
    return df, str(path)


def _read_hub(source: str, spec: DatasetSpec, field_path: str) -> pd.DataFrame:
    import datasets

    name = hub_dataset_id(source) if is_hub_source(source) else source
    try:
        ds = datasets.load_dataset(name, spec.config, split=spec.split, revision=spec.revision)
    except (ConnectionError, FileNotFoundError) as exc:
        raise DataError(
            field_path,
            f"hub dataset {name!r} (split {spec.split!r}) cannot be loaded: the hub is unreachable or offline and it is not cached ({exc}); "
            "give a local jsonl/csv/parquet file instead",
        ) from exc
    except ValueError as exc:
        raise DataError(field_path, f"hub dataset {name!r}: {exc}") from exc
    return ds.to_pandas()


def _check_columns(df: pd.DataFrame, spec: DatasetSpec, where: str) -> None:
    cols = [str(c) for c in df.columns]
    for path, name in (("spec.dataset.textField", spec.text_field), ("spec.dataset.labelField", spec.label_field)):
        if name not in df.columns:
            raise DataError(path, f"column {name!r} is not in {where}; columns present: {', '.join(cols) or '(none)'}")


def _apply_filter(df: pd.DataFrame, spec: DatasetSpec, where: str) -> pd.DataFrame:
    for col, value in (spec.filter or {}).items():
        if col not in df.columns:
            raise DataError(f"spec.dataset.filter.{col}", f"column {col!r} is not in {where}; columns present: {', '.join(map(str, df.columns))}")
        df = df[df[col].astype(str) == str(value)]
    if len(df) == 0:
        raise DataError("spec.dataset.filter", f"no rows of {where} match {spec.filter}")
    return df


def label_mapping(values: list[Any], label_names: list[str] | None) -> tuple[dict[Any, int], list[str]]:
    """Map raw label values to ids 0..N-1 and name them.

    Integers 0..N-1 keep their ids; strings map by `label_names` order (or sorted unique values);
    anything else maps by sorted unique value.
    """
    uniques = sorted({v for v in values}, key=lambda v: (str(type(v)), v))
    ints = all(isinstance(v, int) and not isinstance(v, bool) for v in uniques)
    if ints and uniques and min(uniques) >= 0 and (label_names is not None or max(uniques) < len(uniques)):
        top = max(uniques)
        if label_names is not None:
            if top >= len(label_names):
                raise DataError("spec.dataset.labelNames", f"label id {top} appears in the data but only {len(label_names)} label names are listed")
            return {v: v for v in uniques}, list(label_names)
        return {v: v for v in uniques}, [str(i) for i in range(top + 1)]
    if label_names is not None:
        by_name = {name: i for i, name in enumerate(label_names)}
        unknown = [str(v) for v in uniques if str(v) not in by_name]
        if unknown:
            raise DataError("spec.dataset.labelNames", f"labels {', '.join(map(repr, unknown[:10]))} in the data are not in labelNames {label_names}")
        return {v: by_name[str(v)] for v in uniques}, list(label_names)
    return {v: i for i, v in enumerate(uniques)}, [str(v) for v in uniques]


def _normalise(values: list[Any]) -> list[Any]:
    """Floats that are whole numbers (pandas upcasts ints with NaN) become ints."""
    out: list[Any] = []
    for v in values:
        if hasattr(v, "item"):
            v = v.item()
        if isinstance(v, float) and v.is_integer():
            v = int(v)
        out.append(v)
    return out


def _frame(source: str, spec: DatasetSpec, field_path: str) -> tuple[pd.DataFrame, str]:
    df, where = read_table(source, spec, field_path)
    _check_columns(df, spec, where)
    df = _apply_filter(df, spec, where)
    missing = df[spec.text_field].isna() | df[spec.label_field].isna()
    return df[~missing], where


def load_dataset(spec: DatasetSpec) -> LoadedDataset:
    """Read, filter, sample and split the dataset as the spec says, with label ids 0..N-1."""
    df, where = _frame(spec.source, spec, "spec.dataset.source")
    if spec.max_samples is not None and len(df) > spec.max_samples:
        df = df.sample(n=spec.max_samples, random_state=spec.seed)
    texts = [str(t) for t in df[spec.text_field].tolist()]
    raw = _normalise(df[spec.label_field].tolist())
    sources = {"train": where}

    if spec.validation.source:
        vdf, vwhere = _frame(spec.validation.source, spec, "spec.dataset.validation.source")
        vraw = _normalise(vdf[spec.label_field].tolist())
        mapping, names = label_mapping(raw + vraw, spec.label_names)
        train_t, train_y = texts, [mapping[v] for v in raw]
        val_t, val_y = [str(t) for t in vdf[spec.text_field].tolist()], [mapping[v] for v in vraw]
        stratified = False
        sources["validation"] = vwhere
    else:
        mapping, names = label_mapping(raw, spec.label_names)
        if len(texts) < 2:
            raise DataError("spec.dataset.source", f"{where} has {len(texts)} usable row(s); at least 2 are needed to split off validation")
        ids = [mapping[v] for v in raw]
        train_t, val_t, train_y, val_y, stratified = split(texts, ids, spec.validation.fraction, spec.seed)
    distinct = sorted(set(train_y) | set(val_y))
    if len(distinct) < 2:
        only = names[distinct[0]] if distinct else "(none)"
        raise DataError(
            "spec.dataset.labelField",
            f"column {spec.label_field!r} of {where} has only one distinct label ({only!r}) after filtering; a classifier needs at least 2",
        )
    if not train_t:
        raise DataError("spec.dataset.source", f"{where} has no training rows left after filtering and splitting")
    if not val_t:
        raise DataError("spec.dataset.validation", f"the validation split of {where} is empty; raise validation.fraction or maxSamples")
    return LoadedDataset(train_t, train_y, val_t, val_y, names, stratified, sources)


def split(texts: list[str], ids: list[int], fraction: float, seed: int) -> tuple[list[str], list[str], list[int], list[int], bool]:
    """Seeded train/validation split, stratified by label when every class has at least 2 rows."""
    from collections import Counter

    from sklearn.model_selection import train_test_split

    n_val = max(1, round(len(texts) * fraction))
    counts = Counter(ids)
    can_stratify = min(counts.values()) >= 2 and n_val >= len(counts) and len(texts) - n_val >= len(counts)
    tr_t, va_t, tr_y, va_y = train_test_split(
        texts, ids, test_size=n_val, random_state=seed, stratify=ids if can_stratify else None
    )
    return list(tr_t), list(va_t), list(tr_y), list(va_y), can_stratify
