"""Export the best trial's plain Hugging Face directory and prune the other checkpoints.

Every checkpoint written by graft.jobs.train holds `hf/` (consolidated fp32 safetensors weights,
tokenizer, config with id2label/label2id) next to the DeepSpeed shards. Export copies that `hf/`
to `<storage>/<job>/model/`, a directory any `from_pretrained` loads without DeepSpeed.
"""

from __future__ import annotations

import json
import shutil
import uuid
from pathlib import Path
from typing import Any

from graft.jobs.train import HF_EXPORT_DIR

MODEL_DIR = "model"
EXPORT_META = "graft_export.json"


def model_uri(storage: str, job_name: str) -> str:
    if "://" in storage:
        return f"{storage.rstrip('/')}/{job_name}/{MODEL_DIR}"
    return str(Path(storage).expanduser().resolve() / job_name / MODEL_DIR)


def export_best(checkpoint_path: str, storage: str, job_name: str, meta: dict[str, Any]) -> str:
    """Copy `<checkpoint>/hf/` to `<storage>/<job>/model/` (replacing an older export); return its URI."""
    dest = model_uri(storage, job_name)
    src = f"{checkpoint_path.rstrip('/')}/{HF_EXPORT_DIR}"
    if "://" in dest or "://" in checkpoint_path:
        _copy_fsspec(src, dest, meta)
        return dest
    src_path, dest_path = Path(src), Path(dest)
    if not (src_path / "config.json").is_file():
        raise FileNotFoundError(f"checkpoint {checkpoint_path} has no Hugging Face export in {HF_EXPORT_DIR}/")
    staging = dest_path.with_name(f".{dest_path.name}-{uuid.uuid4().hex[:8]}")
    shutil.copytree(src_path, staging)
    (staging / EXPORT_META).write_text(json.dumps(meta, indent=2, default=str))
    old = dest_path.with_name(f".{dest_path.name}-old-{uuid.uuid4().hex[:8]}")
    if dest_path.exists():
        dest_path.rename(old)
    staging.rename(dest_path)
    shutil.rmtree(old, ignore_errors=True)
    return str(dest_path)


def _copy_fsspec(src: str, dest: str, meta: dict[str, Any]) -> None:
    import fsspec

    src_fs, src_p = fsspec.core.url_to_fs(src)
    dest_fs, dest_p = fsspec.core.url_to_fs(dest)
    if not src_fs.exists(f"{src_p}/config.json"):
        raise FileNotFoundError(f"{src} holds no Hugging Face export (no config.json)")
    if dest_fs.exists(dest_p):
        dest_fs.rm(dest_p, recursive=True)
    for path in src_fs.find(src_p):
        rel = path[len(src_p):].lstrip("/")
        with src_fs.open(path, "rb") as fin, dest_fs.open(f"{dest_p}/{rel}", "wb") as fout:
            shutil.copyfileobj(fin, fout)
    with dest_fs.open(f"{dest_p}/{EXPORT_META}", "w") as fh:
        fh.write(json.dumps(meta, indent=2, default=str))


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
