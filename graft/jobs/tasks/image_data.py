"""Load an image-classification dataset from a spec: an image folder, a table of paths or bytes, IDX files.

Forms of `spec.dataset.source` (and `validation.source`):

- a directory with one sub-directory per class (`cat/001.png`, `dog/002.jpg`): the class is the
  folder name (`format: imagefolder`, or auto for a directory);
- a jsonl, csv or parquet table whose `imageField` column holds an image path (relative to the
  table's folder and below it: an absolute path, `..` or a link out of it is refused) or the image bytes (parquet; or `{"bytes": ..., "path": ...}` as
  Hugging Face `datasets` stores images), and whose `labelField` column holds the label; a hub
  dataset with an image column works the same way;
- an IDX images file (`*-images-idx3-ubyte`, optionally `.gz`, as MNIST and Fashion-MNIST ship)
  with its labels file (`labelsSource`, default: the same name with `images-idx3` -> `labels-idx1`).

Every image is decoded once in the driver (bad images are refused with the file named) and kept
as a uint8 array; the whole dataset then travels to the workers through the Ray object store.
"""

from __future__ import annotations

import gzip
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from graft import storage
from graft.api.spec import DatasetSpec
from graft.jobs.data import DataError, label_mapping, read_table
from graft.jobs.sources import SourceError, resolve_source
from graft.jobs.tasks.image_decode import ImageError, decode_image, read_image_file

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"}
STORE_MAX_SIDE = 512  # images are shrunk to this shorter side when loaded: models here take 224 or less
IDX_IMAGES, IDX_LABELS = "images-idx3", "labels-idx1"


@dataclass
class LoadedImages:
    """Decoded images (H x W or H x W x 3 uint8 arrays) with label ids 0..N-1."""

    train_images: list[np.ndarray]
    train_labels: list[int]
    val_images: list[np.ndarray]
    val_labels: list[int]
    label_names: list[str]
    stratified: bool = False
    sources: dict[str, str] = field(default_factory=dict)

    @property
    def num_labels(self) -> int:
        return len(self.label_names)

    def summary(self) -> dict[str, Any]:
        return {"train": len(self.train_images), "validation": len(self.val_images), "labels": self.label_names, "stratified": self.stratified}


@dataclass
class _Rows:
    """Images not yet decoded: a loader per row, so sampling happens before the decoding work."""

    loaders: list[Any]  # callables returning np.ndarray
    labels: list[Any]
    where: str


def _resolve(source: str, field_path: str) -> Path:
    try:
        return resolve_source(source, field=field_path, kind="dataset")
    except SourceError as exc:
        raise DataError(exc.field, exc.message) from exc


def image_format(source: str, spec: DatasetSpec, field_path: str) -> str:
    """imagefolder, idx, or a table format (jsonl/csv/parquet/hub)."""
    if spec.format != "auto":
        return spec.format
    if "://" not in source or source.startswith(("file://", "package://")):
        path = _resolve(source, field_path)
        if path.is_dir():
            return "imagefolder"
        name = path.name.lower()
        if "idx3" in name or name.endswith(("-ubyte", "-ubyte.gz")):
            return "idx"
    return "table"


# -- image folder ------------------------------------------------------------------------------


def _folder_rows(source: str, field_path: str) -> _Rows:
    root = _resolve(source, field_path)
    if not root.is_dir():
        raise DataError(field_path, f"{str(root)!r} is not a directory; format imagefolder needs one sub-directory per class")
    classes = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        raise DataError(field_path, f"{str(root)!r} has no class sub-directories; lay it out as CLASS/IMAGE.png")
    loaders: list[Any] = []
    labels: list[Any] = []
    for cls in classes:
        files = sorted(p for p in cls.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        for f in files:
            loaders.append(lambda f=f: read_image_file(str(f), max_side=STORE_MAX_SIDE))
            labels.append(cls.name)
    if not loaders:
        raise DataError(field_path, f"no image files ({', '.join(sorted(IMAGE_SUFFIXES))}) under {str(root)!r}")
    return _Rows(loaders, labels, str(root))


# -- IDX -----------------------------------------------------------------------------------------


def _read_idx(path: Path, field_path: str) -> np.ndarray:
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as fh:
            raw = fh.read()
    except (OSError, EOFError) as exc:
        raise DataError(field_path, f"cannot read IDX file {str(path)!r}: {exc}") from exc
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise DataError(field_path, f"{str(path)!r} is not an unsigned-byte IDX file (bad magic number); give *-idx3-ubyte images and *-idx1-ubyte labels")
    ndim = raw[3]
    dims = [int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    start = 4 + 4 * ndim
    expected = int(np.prod(dims))
    if len(raw) - start != expected:
        raise DataError(field_path, f"{str(path)!r} is truncated: the header says {dims} ({expected} bytes), the file holds {len(raw) - start}")
    return np.frombuffer(raw, dtype=np.uint8, offset=start).reshape(dims)


def labels_path_for(images: Path) -> Path:
    name = images.name
    if IDX_IMAGES not in name:
        raise DataError("spec.dataset.labelsSource", f"cannot derive the labels file from {name!r} (no {IDX_IMAGES!r} in the name); set labelsSource")
    return images.with_name(name.replace(IDX_IMAGES, IDX_LABELS))


def _idx_rows(source: str, spec: DatasetSpec, field_path: str, labels_source: str | None) -> _Rows:
    images_path = _resolve(source, field_path)
    labels_field = "spec.dataset.labelsSource"
    labels_file = _resolve(labels_source, labels_field) if labels_source else labels_path_for(images_path)
    if not labels_file.exists():
        raise DataError(labels_field, f"IDX labels file {str(labels_file)!r} does not exist; set labelsSource")
    images = _read_idx(images_path, field_path)
    labels = _read_idx(labels_file, labels_field)
    if images.ndim not in (3, 4) or labels.ndim != 1:
        raise DataError(field_path, f"IDX shapes {list(images.shape)} (images) and {list(labels.shape)} (labels) are not N x H x W [x C] and N")
    if len(images) != len(labels):
        raise DataError(labels_field, f"{len(labels)} labels for {len(images)} images in {str(images_path)!r}")
    loaders = [lambda i=i: images[i] for i in range(len(images))]
    return _Rows(loaders, [int(v) for v in labels], str(images_path))


# -- tables --------------------------------------------------------------------------------------


def _cell_loader(value: Any, base: Path | None, where: str) -> Any:
    if isinstance(value, dict):
        if value.get("bytes"):
            value = value["bytes"]
        elif value.get("path"):
            value = value["path"]
    if isinstance(value, (bytes, bytearray, memoryview)):
        data = bytes(value)
        return lambda: decode_image(data, where, max_side=STORE_MAX_SIDE)
    if isinstance(value, str) and value.strip():
        if base is None:
            raise ImageError(where, f"names the image path {value[:80]!r}, but the table is not a local file: "
                             "a table on object storage or the hub holds image bytes, not paths")
        path = base / value
        if not storage.inside(str(path), str(base)):
            raise ImageError(where, f"names {value[:80]!r}, which is outside the table's folder {base} (after "
                             "resolving links); image paths are relative to the table and stay below it")
        return lambda: read_image_file(str(path), max_side=STORE_MAX_SIDE)
    raise ImageError(where, f"holds {type(value).__name__} {str(value)[:40]!r}, not an image path or image bytes")


def _table_rows(source: str, spec: DatasetSpec, field_path: str) -> _Rows:
    df, where = read_table(source, spec, field_path)
    cols = [str(c) for c in df.columns]
    for path, name in (("spec.dataset.imageField", spec.image_field), ("spec.dataset.labelField", spec.label_field)):
        if name not in df.columns:
            raise DataError(path, f"column {name!r} is not in {where}; columns present: {', '.join(cols) or '(none)'}")
    for col, value in (spec.filter or {}).items():
        if col not in df.columns:
            raise DataError(f"spec.dataset.filter.{col}", f"column {col!r} is not in {where}")
        df = df[df[col].astype(str) == str(value)]
    df = df[df[spec.image_field].notna() & df[spec.label_field].notna()]
    base = Path(where).parent if Path(where).exists() else None
    loaders = []
    for pos, value in enumerate(df[spec.image_field].tolist()):
        loaders.append(_cell_loader(value, base, f"{where} row {pos} ({spec.image_field})"))
    labels = [v.item() if hasattr(v, "item") else v for v in df[spec.label_field].tolist()]
    labels = [int(v) if isinstance(v, float) and v.is_integer() else v for v in labels]
    return _Rows(loaders, labels, where)


# -- loading -------------------------------------------------------------------------------------


def _rows(source: str, spec: DatasetSpec, field_path: str, labels_source: str | None) -> _Rows:
    fmt = image_format(source, spec, field_path)
    if fmt == "imagefolder":
        rows = _folder_rows(source, field_path)
    elif fmt == "idx":
        rows = _idx_rows(source, spec, field_path, labels_source)
    else:
        rows = _table_rows(source, spec, field_path)
    if not rows.loaders:
        raise DataError(field_path, f"{rows.where} has no usable rows")
    return rows


def _decode(rows: _Rows, keep: list[int], field_path: str) -> list[np.ndarray]:
    try:
        return [rows.loaders[i]() for i in keep]
    except ImageError as exc:
        raise DataError(field_path, f"bad image {exc.where}: {exc.message}") from exc


def _sample(n: int, max_samples: int | None, seed: int) -> list[int]:
    if max_samples is None or n <= max_samples:
        return list(range(n))
    return sorted(random.Random(seed).sample(range(n), max_samples))


def load_images(spec: DatasetSpec) -> LoadedImages:
    """Read, sample, split and decode the dataset as the spec says, with label ids 0..N-1."""
    from graft.jobs.data import split

    rows = _rows(spec.source, spec, "spec.dataset.source", spec.labels_source)
    keep = _sample(len(rows.loaders), spec.max_samples, spec.seed)
    raw = [rows.labels[i] for i in keep]
    sources = {"train": rows.where}
    if spec.validation.source:
        vrows = _rows(spec.validation.source, spec, "spec.dataset.validation.source", None)
        vkeep = list(range(len(vrows.loaders)))
        vraw = [vrows.labels[i] for i in vkeep]
        mapping, names = label_mapping(raw + vraw, spec.label_names)
        train_idx, train_y = keep, [mapping[v] for v in raw]
        val_y = [mapping[v] for v in vraw]
        train_x = _decode(rows, train_idx, "spec.dataset.source")
        val_x = _decode(vrows, vkeep, "spec.dataset.validation.source")
        stratified = False
        sources["validation"] = vrows.where
    else:
        if len(keep) < 2:
            raise DataError("spec.dataset.source", f"{rows.where} has {len(keep)} usable image(s); at least 2 are needed to split off validation")
        mapping, names = label_mapping(raw, spec.label_names)
        ids = [mapping[v] for v in raw]
        tr_pos, va_pos, train_y, val_y, stratified = split(list(range(len(keep))), ids, spec.validation.fraction, spec.seed)  # type: ignore[arg-type]
        train_x = _decode(rows, [keep[int(p)] for p in tr_pos], "spec.dataset.source")
        val_x = _decode(rows, [keep[int(p)] for p in va_pos], "spec.dataset.source")
    if len(set(train_y) | set(val_y)) < 2:
        raise DataError("spec.dataset.labelField", f"{rows.where} has only one distinct label; a classifier needs at least 2")
    if not train_x or not val_x:
        raise DataError("spec.dataset.validation", f"the train or validation split of {rows.where} is empty; raise validation.fraction or maxSamples")
    return LoadedImages(train_x, list(train_y), val_x, list(val_y), names, stratified, sources)
