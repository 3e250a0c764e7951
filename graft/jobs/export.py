"""Export the best trial's plain Hugging Face directory and prune the other checkpoints.

Every checkpoint written by graft.jobs.train holds `hf/` (consolidated fp32 safetensors weights,
tokenizer, config with id2label/label2id) next to the DeepSpeed shards. Export copies that `hf/`
to `<job dir>/model/`, a directory any `from_pretrained` loads without DeepSpeed. Local paths and
object storage (graft.storage) alike.

An export is written once and never overwritten (an endpoint may be serving it): a later export of
the same job to a different checkpoint goes to the next free `model-2/`, `model-3/`, ...; a later
attempt of the same job (a retry, a resumed run) that exports the same checkpoint again finds it
already exported and returns that directory.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from graft import storage
from graft.jobs.checkpoint import HF_EXPORT_DIR, missing_files

log = logging.getLogger("graft.jobs")

MODEL_DIR = "model"
EXPORT_META = "graft_export.json"


def model_uri(job_dir: str) -> str:
    return storage.join(job_dir, MODEL_DIR)


def _candidates(first: str) -> Iterator[str]:
    yield first
    for n in range(2, 10_000):
        yield f"{first}-{n}"
    raise FileExistsError(f"{first}: 10000 exports exist already")


def _exported_from(dest: str) -> str | None:
    """The checkpoint an existing export came from (None: no finished export there)."""
    meta = storage.join(dest, EXPORT_META)
    if not storage.exists(meta):
        return None
    found = storage.read_json(meta).get("checkpoint")
    return str(found) if found is not None else None


def _existing_export(first: str, checkpoint_path: str) -> str | None:
    for dest in _candidates(first):
        if not storage.exists(dest):
            return None
        if _exported_from(dest) == checkpoint_path:
            return dest
    return None


def export_best(checkpoint_path: str, job_dir: str, meta: dict[str, Any]) -> str:
    """Copy `<checkpoint>/hf/` to the first free of `<job dir>/model[-N]/`; return its URI.
    Never replaces an earlier export; returns the existing one when it holds this checkpoint
    (`meta["checkpoint"]`). A checkpoint that lacks files its manifests list (graft.jobs.checkpoint)
    raises StorageError naming them: nothing is exported from it."""
    first = model_uri(job_dir)
    found = _existing_export(first, str(meta.get("checkpoint", checkpoint_path)))
    if found is not None:
        return found
    problems = missing_files(checkpoint_path)
    if problems:
        more = f" and {len(problems) - 5} more" if len(problems) > 5 else ""
        raise storage.StorageError(f"checkpoint {checkpoint_path} is incomplete on storage (is the store full?): "
                                   f"{', '.join(problems[:5])}{more} missing")
    src = f"{checkpoint_path.rstrip('/')}/{HF_EXPORT_DIR}"
    if storage.is_remote(first) or storage.is_remote(checkpoint_path):
        return _copy_fsspec(src, first, meta)
    src_path = Path(src)
    if not (src_path / "config.json").is_file():
        raise FileNotFoundError(f"checkpoint {checkpoint_path} has no Hugging Face export in {HF_EXPORT_DIR}/")
    storage.ensure_dir(Path(first).parent)
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
    """Copy to the first free `model[-N]`; the metadata file goes last (it marks a finished export)."""
    src_fs, src_p = storage.fsspec_filesystem(src)
    if not src_fs.exists(f"{src_p}/config.json"):
        raise FileNotFoundError(f"{src} holds no Hugging Face export (no config.json)")
    dest = next(d for d in _candidates(first) if not storage.exists(d))
    dest_fs, dest_p = storage.fsspec_filesystem(dest)
    for path in src_fs.find(src_p):
        rel = path[len(src_p):].lstrip("/")
        with src_fs.open(path, "rb") as fin, dest_fs.open(f"{dest_p}/{rel}", "wb") as fout:
            shutil.copyfileobj(fin, fout)
    with dest_fs.open(f"{dest_p}/{EXPORT_META}", "w") as fh:
        fh.write(json.dumps(meta, indent=2, default=str))
    return dest


def prune_checkpoints(keep: str, all_paths: list[str], within: str) -> list[str]:
    """Delete the checkpoints in `all_paths` other than `keep` (DeepSpeed shards are large), on
    local disk and object storage alike, but only those inside `within` (the job's own directory,
    symlinks resolved: `graft.storage.inside`): the paths come from the progress file on storage the
    tenant can write, and a planted one must never delete anything else. Returns the paths removed."""
    removed = []
    keep_key = keep.rstrip("/") if storage.is_remote(keep) else str(storage.local_path(keep))
    for path in sorted(set(all_paths)):
        key = path.rstrip("/") if storage.is_remote(path) else str(storage.local_path(path))
        if key == keep_key:
            continue
        if not storage.inside(path, within):
            log.warning("not deleting checkpoint %s: it is outside the job's directory %s", path, within)
            continue
        if storage.remove_tree(path):
            removed.append(key)
    return removed
