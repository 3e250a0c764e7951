"""Export the best trial's plain Hugging Face directory and prune the other checkpoints.

Every checkpoint written by graft.jobs.train holds `hf/` (consolidated fp32 safetensors weights,
tokenizer, config with id2label/label2id) next to the DeepSpeed shards. Export copies that `hf/`
to `<storage>/<job>/model/`, a directory any `from_pretrained` loads without DeepSpeed.

An export is written once and never overwritten (an endpoint may be serving it): a later export of
the same job (a retry, a resumed run) goes to the next free `model-2/`, `model-3/`, ...
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from graft.jobs.train import HF_EXPORT_DIR

MODEL_DIR = "model"
EXPORT_META = "graft_export.json"


def model_uri(storage: str, job_name: str) -> str:
    if "://" in storage:
        return f"{storage.rstrip('/')}/{job_name}/{MODEL_DIR}"
    return str(Path(storage).expanduser().resolve() / job_name / MODEL_DIR)


def _candidates(first: str) -> Iterator[str]:
    yield first
    for n in range(2, 10_000):
        yield f"{first}-{n}"
    raise FileExistsError(f"{first}: 10000 exports exist already")


def export_best(checkpoint_path: str, storage: str, job_name: str, meta: dict[str, Any]) -> str:
    """Copy `<checkpoint>/hf/` to the first free of `<storage>/<job>/model[-N]/`; return its URI.
    Never replaces an earlier export."""
    first = model_uri(storage, job_name)
    src = f"{checkpoint_path.rstrip('/')}/{HF_EXPORT_DIR}"
    if "://" in first or "://" in checkpoint_path:
        return _copy_fsspec(src, first, meta)
    src_path = Path(src)
    if not (src_path / "config.json").is_file():
        raise FileNotFoundError(f"checkpoint {checkpoint_path} has no Hugging Face export in {HF_EXPORT_DIR}/")
    staging = Path(first).with_name(f".{MODEL_DIR}-{uuid.uuid4().hex[:8]}")
    shutil.copytree(src_path, staging)
    (staging / EXPORT_META).write_text(json.dumps(meta, indent=2, default=str))
    for dest in _candidates(first):
        try:
            os.rename(staging, dest)  # fails on an existing non-empty directory: never overwrites
        except OSError as exc:
            if exc.errno in (errno.ENOTEMPTY, errno.EEXIST) or Path(dest).exists():
                continue
            raise
        return dest
    raise AssertionError("unreachable")


def _copy_fsspec(src: str, first: str, meta: dict[str, Any]) -> str:
    import fsspec

    src_fs, src_p = fsspec.core.url_to_fs(src)
    if not src_fs.exists(f"{src_p}/config.json"):
        raise FileNotFoundError(f"{src} holds no Hugging Face export (no config.json)")
    dest_fs, _ = fsspec.core.url_to_fs(first)
    dest = next(d for d in _candidates(first) if not dest_fs.exists(fsspec.core.url_to_fs(d)[1]))
    dest_p = fsspec.core.url_to_fs(dest)[1]
    for path in src_fs.find(src_p):
        rel = path[len(src_p):].lstrip("/")
        with src_fs.open(path, "rb") as fin, dest_fs.open(f"{dest_p}/{rel}", "wb") as fout:
            shutil.copyfileobj(fin, fout)
    with dest_fs.open(f"{dest_p}/{EXPORT_META}", "w") as fh:
        fh.write(json.dumps(meta, indent=2, default=str))
    return dest


def prune_checkpoints(keep: str, all_paths: list[str]) -> list[str]:
    """Delete the local checkpoints in `all_paths` other than `keep` (DeepSpeed shards are large).

    Remote checkpoints are left alone (object-store lifecycle rules are the better tool there).
    Returns the paths removed.
    """
    removed = []
    keep_path = Path(keep).resolve() if "://" not in keep else None
    for path in sorted(set(all_paths)):
        if "://" in path or keep_path is None:
            continue
        p = Path(path).resolve()
        if p == keep_path or not p.exists():
            continue
        shutil.rmtree(p, ignore_errors=True)
        removed.append(str(p))
    return removed
