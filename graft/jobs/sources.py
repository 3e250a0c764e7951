"""Resolve a model or dataset `source` string to a local path.

Forms (see docs/training.md):

- a plain path, or `file:///abs/path`: must exist;
- `package://PYMODULE[/SUBPATH]`: a file or directory inside an installed Python package; with no
  SUBPATH and a module-level `get_model_path()`, that function's answer;
- `hf://ORG/NAME`: a Hugging Face hub repository, downloaded with `huggingface_hub.snapshot_download`
  (honours `revision`, `HF_HUB_OFFLINE`, `HF_HOME` and `HF_TOKEN`);
- any other fsspec URI (`s3://`, `gs://`, `az://`, `https://`, ...): copied once into a local cache.

This module is shared by training and serving: keep it free of torch/ray/transformers imports.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import os
import shutil
from pathlib import Path
from typing import Literal
from urllib.parse import unquote, urlparse

from graft.api.references import SCHEME as REFERENCE_SCHEME

SourceKind = Literal["model", "dataset"]

HF_SCHEME = "hf://"
PACKAGE_SCHEME = "package://"
FILE_SCHEME = "file://"


class SpecFieldError(ValueError):
    """A problem with one spec field: `field` names it (e.g. spec.model.source), `message` says what
    to fix. Pickled as (field, message), so it reaches the driver whole when a Ray worker raises it
    (the default pickling of an exception calls the class with its one formatted argument, which
    fails here and hides the message behind a TypeError)."""

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        self.message = message
        super().__init__(f"{field}: {message}" if field else message)

    def __reduce__(self) -> tuple[type[SpecFieldError], tuple[str, str]]:
        return type(self), (self.field, self.message)


class SourceError(SpecFieldError):
    """A source that cannot be resolved; `field` is the spec path it came from."""


def cache_root() -> Path:
    """Where remote sources are copied: `$GRAFT_CACHE_DIR`, else `~/.cache/graft/sources`."""
    env = os.environ.get("GRAFT_CACHE_DIR")
    return Path(env) if env else Path.home() / ".cache" / "graft" / "sources"


def scheme_of(source: str) -> str:
    """`file`, `package`, `hf`, an fsspec protocol such as `s3`, or `` for a plain path."""
    if "://" not in source:
        return ""
    return source.split("://", 1)[0].lower()


def is_hub_source(source: str) -> bool:
    return scheme_of(source) == "hf"


def hub_repo_id(source: str) -> str:
    """`hf://ORG/NAME` -> `ORG/NAME`."""
    return source[len(HF_SCHEME):].strip("/")


def hub_dataset_id(source: str) -> str:
    """`hf://datasets/ORG/NAME` (the hub's own URL form) or `hf://ORG/NAME` -> `ORG/NAME`."""
    return hub_repo_id(source).removeprefix("datasets/")


def resolve_source(
    source: str | os.PathLike[str],
    *,
    field: str = "spec.model.source",
    kind: SourceKind = "model",
    revision: str | None = None,
    cache_dir: Path | None = None,
) -> Path:
    """The local path of `source`, downloading or copying it first where needed.

    Raises `SourceError` naming `field`, the source and how to fix it.
    """
    source = os.fspath(source)
    scheme = scheme_of(source)
    if scheme == "":
        return _local(Path(source).expanduser(), source, field)
    if scheme == "file":
        parsed = urlparse(source)
        return _local(Path(unquote(parsed.netloc + parsed.path)), source, field)
    if scheme == "package":
        return _package(source, field)
    if scheme == REFERENCE_SCHEME.removesuffix("://"):
        raise SourceError(
            field, f"{source!r} is a reference to another FineTuneJob, resolved by `graft run` or the operator before "
            "the job starts; run this spec through one of them, or give the model's path or URI"
        )
    if scheme == "hf":
        if kind == "dataset":
            raise SourceError(field, f"{source!r} is a hub dataset; load it with graft.jobs.data (datasets.load_dataset), not as a path")
        return _hub(source, field, revision, cache_dir)
    return _fsspec(source, field, cache_dir)


def _local(path: Path, source: str, field: str) -> Path:
    if not path.exists():
        raise SourceError(field, f"path {str(path)!r} does not exist (from {source!r}); give an existing local path or a URI such as hf://ORG/NAME or package://MODULE")
    return path.resolve()


def _package(source: str, field: str) -> Path:
    rest = source[len(PACKAGE_SCHEME):].strip("/")
    module_name, _, subpath = rest.partition("/")
    if not module_name:
        raise SourceError(field, f"{source!r} names no package; use package://PYMODULE[/SUBPATH]")
    hint = module_name.replace("_", "-")
    try:
        spec = importlib.util.find_spec(module_name)
    except (ImportError, ValueError) as exc:
        raise SourceError(field, f"Python package {module_name!r} cannot be imported ({exc}); install it, e.g. `pip install {hint}`") from exc
    if spec is None:
        raise SourceError(field, f"Python package {module_name!r} is not installed; install it, e.g. `pip install {hint}`, or give a local path")
    if not subpath:
        module = importlib.import_module(module_name)
        getter = getattr(module, "get_model_path", None)
        if callable(getter):
            path = Path(str(getter()))
            if not path.exists():
                raise SourceError(field, f"{module_name}.get_model_path() returned {str(path)!r}, which does not exist; reinstall `{hint}`")
            return path.resolve()
    if ".." in Path(subpath).parts:
        raise SourceError(field, f"{source!r} climbs out of package {module_name!r} ('..'); name a path inside it")
    roots = list(spec.submodule_search_locations or []) or ([str(Path(spec.origin).parent)] if spec.origin else [])
    for root in roots:
        candidate = Path(root) / subpath if subpath else Path(root)
        if candidate.exists():
            resolved = candidate.resolve()
            if not resolved.is_relative_to(Path(root).resolve()):
                raise SourceError(field, f"{source!r} resolves to {str(resolved)!r}, outside package {module_name!r}")
            return resolved
    where = ", ".join(roots) or "<no location>"
    raise SourceError(field, f"{subpath!r} does not exist inside package {module_name!r} (looked in {where})")


def _hub(source: str, field: str, revision: str | None, cache_dir: Path | None) -> Path:
    repo_id = hub_repo_id(source)
    if repo_id.count("/") > 1 or not repo_id:
        raise SourceError(field, f"{source!r} is not a hub id; use hf://ORG/NAME")
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import (
        HFValidationError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    try:
        path = snapshot_download(repo_id, revision=revision, cache_dir=str(cache_dir) if cache_dir else None)
    except LocalEntryNotFoundError as exc:
        offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")
        why = "offline (HF_HUB_OFFLINE is set)" if offline else "unreachable"
        raise SourceError(
            field,
            f"the Hugging Face hub is {why} and {repo_id!r} (revision {revision or 'main'}) is not in the local cache; "
            "download the model elsewhere and give its local directory (or a package:// / s3:// URI) instead",
        ) from exc
    except RevisionNotFoundError as exc:
        raise SourceError("spec.model.revision", f"revision {revision!r} does not exist in {repo_id!r}") from exc
    except RepositoryNotFoundError as exc:
        raise SourceError(field, f"hub repository {repo_id!r} does not exist or needs a token (set HF_TOKEN)") from exc
    except HFValidationError as exc:
        raise SourceError(field, f"{source!r} is not a valid hub id: {exc}") from exc
    return Path(path)


def _fsspec(source: str, field: str, cache_dir: Path | None) -> Path:
    from graft import storage

    try:
        fs, path = storage.fsspec_filesystem(source)  # s3:// through pyarrow, other schemes through fsspec
    except (ImportError, ValueError, OSError) as exc:
        raise SourceError(field, f"cannot open {source!r}: {exc} (install the fsspec backend for this scheme, e.g. gcsfs)") from exc
    digest = hashlib.sha256(source.encode()).hexdigest()[:16]
    name = Path(path.rstrip("/")).name or "source"
    dest = (cache_dir or cache_root()) / digest / name
    if dest.exists():
        return dest
    try:
        exists = fs.exists(path)
    except OSError as exc:
        raise SourceError(field, f"{source!r} is unreachable: {exc}") from exc
    if not exists:
        raise SourceError(field, f"{source!r} does not exist")
    partial = dest.with_name(dest.name + f".partial-{os.getpid()}")
    if partial.exists():
        shutil.rmtree(partial) if partial.is_dir() else partial.unlink()
    partial.parent.mkdir(parents=True, exist_ok=True)
    try:
        if fs.isdir(path):
            fs.get(path.rstrip("/") + "/", str(partial) + "/", recursive=True)
        else:
            fs.get(path, str(partial))
    except OSError as exc:
        raise SourceError(field, f"copying {source!r} failed: {exc}") from exc
    os.replace(partial, dest)
    return dest
