"""One storage root per job, and whether every Ray pod can reach it (design.md section 3).

The root is `spec.checkpoints.storage`, else the operator's storage setting. A job writes its
checkpoints, result, log and model under `<root>/<namespace>/<name>-<uid8>/`. On the RayJob path
the root must be reachable from every pod of the job's own cluster: an object store URI
(`s3://`, `gs://`, ...), or the PVC's mount path (or a path inside the namespace's own part of it,
`<mount>/<namespace>/...`: each Ray pod mounts only its namespace's part, at that path).
"""

from __future__ import annotations

import logging
import posixpath
from pathlib import Path

from graft import storage
from graft.api import locations
from graft.api.spec import FineTuneJob
from graft.operator.names import run_dir
from graft.operator.settings import OperatorSettings

log = logging.getLogger("graft.operator")

# The object stores graft.storage writes to (checkpoints, result, log, model): s3:// through pyarrow,
# any S3-compatible server included. Any other scheme would pass here and fail later, in the job and in
# the operator's own reads and cleanup, so it is refused before any work starts.
OBJECT_STORES = ("s3://",)


def storage_root(job: FineTuneJob, settings: OperatorSettings) -> str | None:
    return job.spec.checkpoints.storage or settings.result_storage


def job_dir(job: FineTuneJob, settings: OperatorSettings) -> str | None:
    """`<root>/<namespace>/<name>-<uid8>` (None without a root)."""
    root = storage_root(job, settings)
    uid = job.metadata.uid_or_empty()
    return run_dir(root, job.metadata.namespace or "", job.metadata.name, uid) if root else None


def unsupported_scheme(job: FineTuneJob, settings: OperatorSettings) -> str | None:
    """Why the job's storage root has a scheme Graft cannot write (None: a path, file:// or s3://)."""
    root = storage_root(job, settings)
    if not root or "://" not in root or root.lower().startswith(("file://", *OBJECT_STORES)):
        return None
    field = "spec.checkpoints.storage" if job.spec.checkpoints.storage else "the operator's result storage (--result-storage)"
    return (f"{field}: {root!r} uses {root.split('://', 1)[0]}://, which Graft cannot write checkpoints, results and "
            f"models to; use s3://BUCKET/PATH (AWS or any S3-compatible server) or a path under {settings.storage_mount_path}")


def unreachable(job: FineTuneJob, settings: OperatorSettings) -> str | None:
    """Why the job's storage cannot be reached from every pod of a RayJob cluster (None: it can)."""
    root = storage_root(job, settings)
    fix = ("set spec.checkpoints.storage to an object store URI (s3://...) or a path under "
           f"{settings.storage_mount_path}, or install the operator with a storage PVC or object store")
    if scheme := unsupported_scheme(job, settings):
        return scheme
    if not root:
        return f"spec.checkpoints.storage: unset and the operator has no default storage; {fix}"
    if root.startswith(OBJECT_STORES):
        return None
    try:
        where = locations.parse(root)
    except locations.LocationError as exc:
        return f"spec.checkpoints.storage: {exc}; {fix}"
    if not where.local:
        return f"spec.checkpoints.storage: {root!r} is not a storage every Ray pod can reach; {fix}"
    # A Ray pod mounts only its namespace's part, at <mount>/<namespace>: the root must be the mount
    # itself (jobs write under <root>/<namespace>/) or lie inside that part.
    mount = settings.storage_mount_path
    own = posixpath.join(mount, job.metadata.namespace or "")
    if settings.storage_pvc and (where == locations.parse(mount) or locations.under(where, own)):
        return None
    mounted = (f"the Ray pods mount only the namespace's part of the PVC {settings.storage_pvc}, at {own}"
               if settings.storage_pvc else "no PVC is mounted into Ray pods")
    return f"spec.checkpoints.storage: {root!r} is a local path, but {mounted}; {fix}"


def remove_experiment(job: FineTuneJob, settings: OperatorSettings) -> bool:
    """When the job's TTL expires: delete `<job dir>/runs/` (the Tune experiment and its
    checkpoints) of exactly this job; result.json, job.log and model/ stay. Storage the operator
    cannot reach (a tenant's bucket behind a tenant Secret) is left to its lifecycle rules: logged,
    never fatal. True when something was deleted."""
    own = job_dir(job, settings)
    if not own:
        return False
    try:
        return storage.remove_experiment(own)
    except (OSError, ImportError, ValueError) as exc:  # unreachable, or no filesystem for the scheme
        log.warning("FineTuneJob %s/%s: could not delete its experiment under %s: %s", job.metadata.namespace, job.metadata.name, own, exc)
        return False


def ensure_namespace_part(namespace: str, settings: OperatorSettings) -> None:
    """Create `<storageMountPath>/<namespace>` (setgid 2770, `graft.storage.DIR_MODE`) before the
    first Ray cluster of the namespace: its storage claim is backed by that directory only (on
    hostPath, a PersistentVolume of type Directory), and the operator, which mounts the whole root,
    creates it with the storage group. Nothing to do without a PVC or where the root is not mounted
    here (an operator outside the cluster); a failure is logged: the Ray pods then wait for the volume."""
    root = Path(settings.storage_mount_path)
    if not settings.storage_pvc or not root.is_dir():
        return
    try:
        storage.ensure_dir(root / namespace)
    except OSError as exc:
        log.warning("cannot create the storage part %s of namespace %s: %s", root / namespace, namespace, exc)
