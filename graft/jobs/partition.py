"""The job's own side of the storage partition: before it reads a source, the job checks that the
source does not lie in another namespace's part of its storage root, in any spelling and after
resolving symlinks (admission checked the text; a symlink in the tenant's own part is only seen here).

On Kubernetes a job writes under `<root>/<namespace>/...` (graft.storage.job_dir). A source under
`<root>` must then lie under `<root>/<namespace>`; one elsewhere (the hub, a package, a bucket the
policy admitted) is not judged here.
"""

from __future__ import annotations

import os

from graft import storage
from graft.api import locations
from graft.api.errors import FieldError, SpecError
from graft.api.spec import FineTuneJob


def _real(value: str) -> str:
    """The canonical form of `value`; for a local path, with symlinks resolved."""
    where = locations.parse(value)
    return os.path.realpath(where.path) if where.local and where.path.startswith("/") else str(where)


def foreign_sources(job: FineTuneJob) -> list[FieldError]:
    """Every source of `job` in another namespace's part of its storage root (none without a root or
    namespace, as under `graft run`)."""
    root, namespace = job.spec.checkpoints.storage, job.metadata.namespace
    if not root or not namespace:
        return []
    real_root = _real(root)
    out: list[FieldError] = []
    for field, value, _ in job.spec.sources():
        if storage.is_remote(value) and not locations.under(value, root):
            continue
        try:
            part = locations.part_below(_real(value), real_root)
        except locations.LocationError as exc:
            out.append(FieldError(field, str(exc)))
            continue
        if part is not None and part != namespace:
            out.append(FieldError(field, f"{value!r} lies in namespace {part}'s part of the storage {root} "
                                  f"(after resolving links); a job reads only under {root.rstrip('/')}/{namespace}"))
    return out


def check_sources(job: FineTuneJob) -> None:
    """Raise SpecError (nothing read yet) when a source lies in another namespace's part."""
    problems = foreign_sources(job)
    if problems:
        raise SpecError(problems)
