"""`finetunejob://NAME`: another FineTuneJob's trained model as `spec.model.source` or
`spec.distillation.teacher` (a distillation student naming its teacher, or a second fine-tuning
round starting from the first).

A reference is resolved before the spec reaches Ray, to the referenced job's exported model
directory (its result's `modelUri`):

* by the operator, in the job's own namespace only: the job waits (condition Accepted=False,
  reason WaitingForFineTuneJob) while the referenced job is missing or unfinished, fails when it
  failed, and keeps what it resolved in `status.admitted.references`;
* by `graft run`, from the newest succeeded run of NAME under `runs/` (`runs/NAME/` or the
  default `runs/NAME-TIME/`).

Code inside Ray never sees a reference (graft.jobs refuses one with this explanation).
See docs/spec.md "References to other jobs".
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

from graft.api import locations
from graft.api.safety import NAME_PATTERN

if TYPE_CHECKING:
    from graft.api.spec import FineTuneJob, FineTuneJobSpec

SCHEME = "finetunejob://"
_NAME = re.compile(NAME_PATTERN)
MAX_NAME_LENGTH = 253


def referenced_name(value: str | None) -> str | None:
    """NAME of a `finetunejob://NAME` value; None for any other value."""
    if value is None or not value.startswith(SCHEME):
        return None
    return value[len(SCHEME):]


def check_reference(value: str) -> str:
    """A `finetunejob://` value names one job of the same namespace: a DNS-1123 name, no namespace."""
    name = referenced_name(value)
    if name is None:
        return value
    if "/" in name:
        raise ValueError(
            f"{value!r}: a finetunejob:// reference names a FineTuneJob of the job's own namespace, without a "
            f"namespace or path; write {SCHEME}NAME"
        )
    if not _NAME.match(name) or len(name) > MAX_NAME_LENGTH:
        raise ValueError(f"{value!r}: {name!r} is not a FineTuneJob name (lower-case letters, digits and '-')")
    return value


def references(spec: FineTuneJobSpec) -> dict[str, str]:
    """Field path -> referenced job name, for every field of `spec` that holds a reference."""
    out: dict[str, str] = {}
    if (name := referenced_name(spec.model.source)) is not None:
        out["spec.model.source"] = name
    if spec.distillation is not None and (name := referenced_name(spec.distillation.teacher)) is not None:
        out["spec.distillation.teacher"] = name
    return out


def with_resolved(job: FineTuneJob, resolved: dict[str, str]) -> FineTuneJob:
    """`job` with each field that holds a reference replaced by its model URI in `resolved` (field
    path -> URI); fields without an entry, and entries for fields without a reference, are left."""
    todo = {path: resolved[path] for path in references(job.spec) if path in resolved}
    if not todo:
        return job
    out = job.model_copy(deep=True)
    if "spec.model.source" in todo:
        out.spec.model.source = todo["spec.model.source"]
    if "spec.distillation.teacher" in todo and out.spec.distillation is not None:
        out.spec.distillation.teacher = todo["spec.distillation.teacher"]
    return out


def _inside(value: str, home: str) -> bool:
    try:
        return locations.under(value, home)
    except locations.LocationError:
        return False


@dataclass(frozen=True)
class Unresolved(Exception):
    """A reference that cannot be resolved now. `waiting`: it may resolve later (the job waits)."""

    field: str
    name: str
    reason: str
    waiting: bool

    def __str__(self) -> str:
        return f"{self.field}: {SCHEME}{self.name}: {self.reason}"


def model_of(
    field: str, name: str, phase: str | None, model_uri: str | None, message: str = "", *, home: str | None = None,
) -> str:
    """The model URI a reference resolves to, from the referenced job's phase and modelUri
    (`phase` None: no such job). Raises Unresolved: waiting while it may still succeed.

    `home` is the referenced job's own directory: the modelUri was read back from its result
    document, on storage its tenant can write, so it must lie under `home` in every spelling
    (`graft.api.locations`); a reference never reaches anything else."""
    if phase is None:
        raise Unresolved(field, name, "no FineTuneJob of that name in this namespace (yet)", waiting=True)
    if phase == "Succeeded":
        if not model_uri:
            raise Unresolved(field, name, "it succeeded without an exported model (status.modelUri is empty)", waiting=False)
        if home is not None and not _inside(model_uri, home):
            raise Unresolved(field, name, f"its result names the model {model_uri!r}, outside its own directory {home}; "
                             "a reference resolves only to the model that job exported", waiting=False)
        return model_uri
    if phase in ("Failed", "Rejected"):
        detail = f": {message}" if message else ""
        raise Unresolved(field, name, f"it ended {phase}{detail}; fix or re-create it, then re-create this job", waiting=False)
    raise Unresolved(field, name, f"waiting for it to succeed (phase {phase})", waiting=True)
