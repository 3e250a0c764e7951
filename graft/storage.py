"""Where a job's files live, and the filesystems that reach them: local paths and `s3://` object storage.

Layout (docs/design.md, section 3): one directory per job run under the storage root,
`<root>/<namespace>/<job>-<uid8>/` holding

    runs/        the Tune experiment (resumable across attempts), Ray Train checkpoints inside
    result.json  the TrainingResult
    job.log      the job's log
    model/       the exported best model (written once)

Object storage is reached through the filesystem Ray itself uses: a `pyarrow.fs.S3FileSystem`,
passed to Ray Train/Tune as `storage_filesystem`, and wrapped in fsspec's `ArrowFSWrapper` for
Graft's own small files and copies.
Credentials and endpoint are the standard AWS variables, read from the environment (on Kubernetes
they come from the Secret named by the job's storage credentials, through `envFrom`) or from a
directory holding one file per variable (a mounted Secret, `GRAFT_S3_CREDENTIALS_DIR`):

    AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN (optional),
    AWS_ENDPOINT_URL_S3 or AWS_ENDPOINT_URL (optional: an S3-compatible server), AWS_REGION

Credentials are never printed: `S3Config`'s repr masks them.

This module imports neither Ray nor pyarrow at import time (the operator uses it too).
"""

from __future__ import annotations

import json
import os
import shutil
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from graft.api import locations

RUNS_DIR = "runs"
RESULT_FILE = "result.json"
LOG_FILE = "job.log"
MODEL_DIR = "model"
CREDENTIALS_DIR_ENV = "GRAFT_S3_CREDENTIALS_DIR"
CREDENTIAL_KEYS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN")
SETTING_KEYS = ("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL", "AWS_REGION", "AWS_DEFAULT_REGION")
DEFAULT_REGION = "us-east-1"


class StorageError(OSError):
    """Storage is unreachable, unwritable or full; the message names the URI and the cause."""


def is_remote(uri: str) -> bool:
    """True for a URI with a scheme other than `file://` (s3://, gs://, ...)."""
    return "://" in uri and not uri.startswith("file://")


def local_path(uri: str) -> Path:
    return Path(uri.removeprefix("file://")).expanduser().resolve()


DIR_MODE = 0o2770
STORAGE_UMASK = 0o007


def set_storage_umask() -> int:
    """Set this process's umask to `STORAGE_UMASK` (inherited by every process it starts) and return
    the previous one: whatever it creates on job storage (Ray's checkpoints and trial directories
    under `runs/` included) is group-writable and never world-accessible, so the operator, in the
    storage group, can delete a finished job's directory at TTL cleanup."""
    return os.umask(STORAGE_UMASK)


def ensure_dir(path: Path) -> Path:
    """Create a local directory and its missing parents, each new one `DIR_MODE` (setgid, rwx for
    owner and group, nothing for others; never world-writable): on shared job storage the operator
    (uid 65532) and the Ray pods (uid 1000) share the storage group (docs/install.md#storage), the
    setgid bit keeps that group on everything below, and whichever creates a job's directory first
    does not lock the other out of it."""
    missing = []
    node = path
    while not node.exists():
        missing.append(node)
        node = node.parent
    for new in reversed(missing):
        try:
            new.mkdir()
        except FileExistsError:
            continue
        new.chmod(DIR_MODE)
    return path


def inside(uri: str, base: str) -> bool:
    """True when `uri` is `base` or lies below it (`graft.api.locations.under`: every spelling
    judged by its canonical form) and, for a local path, still does once symlinks are resolved (the
    real paths are compared again). Used on every location read back from storage before it is
    read or deleted: a planted document may name anything."""
    try:
        if not locations.under(uri, base):
            return False
        if is_remote(uri):
            return True
        real = os.path.realpath(locations.parse(uri).path)
        return locations.under(real, os.path.realpath(locations.parse(base).path))
    except locations.LocationError:
        return False


def join(base: str, *parts: str) -> str:
    """`base/part/...` for a URI; an absolute, resolved path for a local base."""
    if is_remote(base):
        return "/".join([base.rstrip("/"), *(p.strip("/") for p in parts)])
    return str(local_path(base).joinpath(*parts))


def job_dir(root: str, namespace: str | None, name: str, uid: str | None) -> str:
    """`<root>/<namespace>/<name>-<uid8>`: one directory per job run, never shared by two jobs.

    `graft run` has neither namespace nor uid: its directory is `<root>/<name>` (the run
    directory is already its own)."""
    if not uid:
        return join(root, *( [namespace] if namespace else []), name)
    return join(root, namespace or "default", f"{name}-{uid[:8]}")


# -- credentials ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class S3Config:
    """Endpoint, region and credentials for s3:// URIs."""

    endpoint: str | None = None
    region: str = DEFAULT_REGION
    access_key: str | None = field(default=None, repr=False)
    secret_key: str | None = field(default=None, repr=False)
    session_token: str | None = field(default=None, repr=False)

    def __repr__(self) -> str:
        creds = "set" if self.access_key else "default chain"
        return f"S3Config(endpoint={self.endpoint!r}, region={self.region!r}, credentials={creds})"

    @classmethod
    def load(cls, env: Mapping[str, str] | None = None) -> S3Config:
        """From the environment, completed by the files in `$GRAFT_S3_CREDENTIALS_DIR` (if set)."""
        values = dict(os.environ if env is None else env)
        secret_dir = values.get(CREDENTIALS_DIR_ENV)
        if secret_dir:
            base = Path(secret_dir)
            if not base.is_dir():
                raise StorageError(f"{CREDENTIALS_DIR_ENV}={secret_dir} is not a directory (mount the credentials Secret there)")
            for key in CREDENTIAL_KEYS + SETTING_KEYS:
                path = base / key
                if key not in values and path.is_file():
                    values[key] = path.read_text().strip()
        endpoint = values.get("AWS_ENDPOINT_URL_S3") or values.get("AWS_ENDPOINT_URL") or None
        region = values.get("AWS_REGION") or values.get("AWS_DEFAULT_REGION") or DEFAULT_REGION
        access, secret = values.get("AWS_ACCESS_KEY_ID"), values.get("AWS_SECRET_ACCESS_KEY")
        if bool(access) != bool(secret):
            missing = "AWS_SECRET_ACCESS_KEY" if access else "AWS_ACCESS_KEY_ID"
            raise StorageError(f"object storage credentials are incomplete: {missing} is not set (set both keys, or neither)")
        return cls(endpoint=endpoint, region=region, access_key=access or None, secret_key=secret or None, session_token=values.get("AWS_SESSION_TOKEN") or None)


def _bucket_path(uri: str) -> str:
    parsed = urlparse(uri)
    if parsed.scheme != "s3" or not parsed.netloc:
        raise StorageError(f"{uri!r} is not an s3://BUCKET/PATH URI")
    return f"{parsed.netloc}{parsed.path}".rstrip("/")


def arrow_filesystem(uri: str, config: S3Config | None = None) -> tuple[Any, str]:
    """(pyarrow filesystem, path inside it) for Ray's `storage_filesystem` / `storage_path`.

    s3:// gets an explicit `S3FileSystem` (endpoint, region, credentials): pyarrow would
    otherwise ask AWS for the bucket's region. Other schemes: pyarrow's own resolution."""
    try:
        import pyarrow.fs as pafs
    except ImportError as exc:
        raise StorageError(f"{uri}: object storage needs pyarrow (pip install 'graft[s3]')") from exc

    if not is_remote(uri):
        return pafs.LocalFileSystem(), str(local_path(uri))
    if not uri.startswith("s3://"):
        fs, path = pafs.FileSystem.from_uri(uri)
        return fs, path
    cfg = config or S3Config.load()
    kwargs: dict[str, Any] = {"region": cfg.region}
    if cfg.endpoint:
        ep = urlparse(cfg.endpoint)
        kwargs["endpoint_override"] = ep.netloc or ep.path
        kwargs["scheme"] = ep.scheme or "https"
    if cfg.access_key:
        kwargs.update(access_key=cfg.access_key, secret_key=cfg.secret_key, session_token=cfg.session_token)
    return pafs.S3FileSystem(**kwargs), _bucket_path(uri)


def fsspec_filesystem(uri: str, config: S3Config | None = None) -> tuple[Any, str]:
    """(fsspec filesystem, path inside it). s3:// is pyarrow's S3 client behind fsspec's
    `ArrowFSWrapper` (one S3 client for Ray and Graft; s3fs's botocore pins python-dateutil<3,
    which the kubernetes client cannot use); other schemes: fsspec's own."""
    import fsspec

    if not is_remote(uri):
        return fsspec.filesystem("file"), str(local_path(uri))
    if not uri.startswith("s3://"):
        fs, path = fsspec.core.url_to_fs(uri)
        return fs, path
    try:
        from fsspec.implementations.arrow import ArrowFSWrapper
    except ImportError as exc:  # pragma: no cover - fsspec always has it; pyarrow may be missing
        raise StorageError(f"{uri}: s3:// storage needs pyarrow (pip install 'graft[s3]')") from exc
    arrow, path = arrow_filesystem(uri, config)
    return ArrowFSWrapper(arrow), path


# -- small operations ---------------------------------------------------------------------------------


def exists(uri: str) -> bool:
    fs, path = fsspec_filesystem(uri)
    return bool(fs.exists(path))


def read_text(uri: str) -> str:
    fs, path = fsspec_filesystem(uri)
    with fs.open(path, "r") as fh:
        return str(fh.read())


TORN_READ_RETRIES = 10


def read_json(uri: str) -> Any:
    """A JSON document that a writer may be replacing while it is read.

    Arrow's S3 reader asks for the object's size (HEAD) and then reads that many bytes (a ranged
    GET); a PUT between the two hands back the new object cut to the old size. A cut JSON document
    never parses (its closing bracket is its last character), so a decode error is read again, up
    to `TORN_READ_RETRIES` times; a document that stays unreadable raises the last error."""
    for attempt in range(1, TORN_READ_RETRIES):
        try:
            return json.loads(read_text(uri))
        except json.JSONDecodeError:
            time.sleep(0.05 * attempt)
    return json.loads(read_text(uri))


def write_text(uri: str, text: str) -> None:
    """Write a small file whole (on object storage a PUT is atomic; locally via rename)."""
    if not is_remote(uri):
        dest = local_path(uri)
        ensure_dir(dest.parent)
        tmp = dest.with_name(f".{dest.name}.{uuid.uuid4().hex[:8]}.tmp")
        tmp.write_text(text)
        tmp.replace(dest)
        return
    fs, path = fsspec_filesystem(uri)
    try:
        with fs.open(path, "w") as fh:
            fh.write(text)
    except OSError as exc:
        raise StorageError(f"cannot write {uri}: {exc}") from exc


def remove_tree(uri: str) -> bool:
    """Delete a directory (prefix) and everything under it; False when there was nothing."""
    if not is_remote(uri):
        p = local_path(uri)
        if not p.exists():
            return False
        shutil.rmtree(p)
        return True
    fs, path = fsspec_filesystem(uri)
    if not fs.exists(path):
        return False
    fs.rm(path, recursive=True)
    return True


def check_writable(root: str) -> None:
    """Write and delete a probe under `root`; raise `StorageError` naming the URI and the cause."""
    probe = join(root, f".graft-probe-{uuid.uuid4().hex[:8]}")
    try:
        write_text(probe, "probe")
        fs, path = fsspec_filesystem(probe)
        fs.rm(path)
    except OSError as exc:
        raise StorageError(f"storage {root} is not writable: {exc}") from exc


def remove_experiment(job_directory: str) -> bool:
    """Delete `<job dir>/runs/` (the Tune experiment and its checkpoints) of exactly this job.

    Called when the job's TTL expires. result.json, job.log and model/ (possibly served) stay."""
    return remove_tree(join(job_directory, RUNS_DIR))


__all__ = [
    "LOG_FILE",
    "MODEL_DIR",
    "RESULT_FILE",
    "RUNS_DIR",
    "S3Config",
    "StorageError",
    "arrow_filesystem",
    "check_writable",
    "exists",
    "fsspec_filesystem",
    "inside",
    "is_remote",
    "job_dir",
    "join",
    "read_text",
    "remove_experiment",
    "remove_tree",
    "write_text",
]
