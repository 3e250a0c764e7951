"""Image datasets: each loader format, labels, IDX files, and bad images refused with the file named."""

from __future__ import annotations

import gzip
import io
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from graft.api.spec import DatasetSpec
from graft.jobs.data import DataError
from graft.jobs.tasks.image_data import load_images
from graft.jobs.tasks.image_decode import ImageError, decode_image

pytestmark = pytest.mark.unit
CLASSES = ("circle", "square")


def png(label: int, seed: int, mode: str = "RGB", size: int = 16) -> bytes:
    """A small image whose brightness pattern depends on the label."""
    rng = np.random.default_rng(seed)
    arr = (rng.random((size, size, 3)) * 60 + (180 if label else 20)).astype(np.uint8)
    img = Image.fromarray(arr).convert(mode)
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def image_folder(root: Path, per_class: int = 6) -> Path:
    for label, name in enumerate(CLASSES):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            (root / name / f"{i:03d}.png").write_bytes(png(label, i))
    return root


def test_image_folder_labels_are_the_folder_names(tmp_path: Path) -> None:
    ds = load_images(DatasetSpec(source=str(image_folder(tmp_path / "imgs"))))
    assert ds.label_names == list(CLASSES)
    assert len(ds.train_images) + len(ds.val_images) == 12
    assert ds.train_images[0].dtype == np.uint8 and ds.train_images[0].shape == (16, 16, 3)


@pytest.mark.parametrize("fmt", ["jsonl", "csv", "parquet"])
def test_table_of_relative_paths_loads(tmp_path: Path, fmt: str) -> None:
    image_folder(tmp_path)
    rows = [{"image": f"{name}/{i:03d}.png", "label": name} for name in CLASSES for i in range(6)]
    path = tmp_path / f"index.{fmt}"
    if fmt == "jsonl":
        path.write_text("\n".join(json.dumps(r) for r in rows))
    elif fmt == "csv":
        pd.DataFrame(rows).to_csv(path, index=False)
    else:
        pd.DataFrame(rows).to_parquet(path)
    ds = load_images(DatasetSpec(source=str(path)))
    assert ds.label_names == list(CLASSES) and len(ds.train_images) + len(ds.val_images) == 12


@pytest.mark.parametrize("as_struct", [False, True], ids=["bytes", "datasets-image-struct"])
def test_parquet_of_image_bytes_loads(tmp_path: Path, as_struct: bool) -> None:
    cells = [png(i % 2, i) for i in range(10)]
    rows = [{"img": {"bytes": c, "path": None} if as_struct else c, "y": i % 2} for i, c in enumerate(cells)]
    path = tmp_path / "images.parquet"
    pd.DataFrame(rows).to_parquet(path)
    ds = load_images(DatasetSpec(source=str(path), image_field="img", label_field="y", label_names=["dark", "light"]))
    assert ds.label_names == ["dark", "light"] and len(ds.train_images) + len(ds.val_images) == 10


def write_idx(path: Path, array: np.ndarray, compress: bool) -> None:
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    data = header + array.astype(np.uint8).tobytes()
    path.write_bytes(gzip.compress(data) if compress else data)


@pytest.mark.parametrize("compress", [False, True])
def test_idx_files_load_with_the_derived_labels_file(tmp_path: Path, compress: bool) -> None:
    suffix = ".gz" if compress else ""
    images = np.stack([np.full((8, 8), 30 * (i % 3), dtype=np.uint8) for i in range(30)])
    write_idx(tmp_path / f"train-images-idx3-ubyte{suffix}", images, compress)
    write_idx(tmp_path / f"train-labels-idx1-ubyte{suffix}", np.array([i % 3 for i in range(30)]), compress)
    ds = load_images(DatasetSpec(source=str(tmp_path / f"train-images-idx3-ubyte{suffix}"), label_names=["a", "b", "c"]))
    assert len(ds.train_images) + len(ds.val_images) == 30
    assert ds.train_images[0].shape == (8, 8)
    for image, label in zip(ds.train_images, ds.train_labels, strict=True):
        assert int(image[0, 0]) == 30 * label


def test_idx_with_fewer_labels_than_images_is_refused(tmp_path: Path) -> None:
    write_idx(tmp_path / "x-images-idx3-ubyte", np.zeros((5, 4, 4)), False)
    write_idx(tmp_path / "x-labels-idx1-ubyte", np.zeros(4), False)
    with pytest.raises(DataError, match="4 labels for 5 images") as info:
        load_images(DatasetSpec(source=str(tmp_path / "x-images-idx3-ubyte")))
    assert info.value.field == "spec.dataset.labelsSource"


def test_max_samples_is_seeded(tmp_path: Path) -> None:
    root = image_folder(tmp_path / "imgs", per_class=10)
    a = load_images(DatasetSpec(source=str(root), max_samples=8, seed=3))
    b = load_images(DatasetSpec(source=str(root), max_samples=8, seed=3))
    assert len(a.train_images) + len(a.val_images) == 8
    assert all(np.array_equal(x, y) for x, y in zip(a.train_images, b.train_images, strict=True))


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b"", "is empty"),
        (png(1, 0)[:60], "truncated or corrupt"),
        (b"definitely not an image", "not an image"),
    ],
    ids=["zero-size", "truncated", "not-an-image"],
)
def test_bad_image_in_a_folder_is_refused_with_the_file_named(tmp_path: Path, content: bytes, expected: str) -> None:
    root = image_folder(tmp_path / "imgs")
    bad = root / "square" / "bad.png"
    bad.write_bytes(content)
    with pytest.raises(DataError, match=expected) as info:
        load_images(DatasetSpec(source=str(root)))
    assert str(bad) in str(info.value)
    assert info.value.field == "spec.dataset.source"


def test_wrong_mode_image_is_refused_with_the_mode_and_fix() -> None:
    buf = io.BytesIO()
    Image.fromarray(np.zeros((4, 4), dtype=np.float32), mode="F").save(buf, format="TIFF")
    with pytest.raises(ImageError, match=r"mode 'F'.*convert it to 8-bit grey \(L\) or RGB") as info:
        decode_image(buf.getvalue(), "scan.tif")
    assert info.value.where == "scan.tif"


@pytest.mark.parametrize(("mode", "shape"), [("L", (16, 16)), ("1", (16, 16)), ("P", (16, 16, 3)), ("RGBA", (16, 16, 3)), ("CMYK", (16, 16, 3))])
def test_accepted_modes_decode_to_grey_or_rgb(mode: str, shape: tuple[int, ...]) -> None:
    data = png(0, 1, mode=mode) if mode != "CMYK" else _jpeg_cmyk()
    assert decode_image(data, "x").shape == shape


def _jpeg_cmyk() -> bytes:
    buf = io.BytesIO()
    Image.new("CMYK", (16, 16), (10, 20, 30, 0)).save(buf, format="JPEG")
    return buf.getvalue()


def test_large_images_are_shrunk_to_the_storage_side() -> None:
    assert decode_image(png(0, 0, size=64), "x", max_side=32).shape == (32, 32, 3)


def test_table_without_the_image_column_names_the_field(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    path.write_text(json.dumps({"file": "a.png", "label": 0}))
    with pytest.raises(DataError, match="column 'image' is not in") as info:
        load_images(DatasetSpec(source=str(path)))
    assert info.value.field == "spec.dataset.imageField"
