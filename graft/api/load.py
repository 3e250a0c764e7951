"""Read FineTuneJob and ModelEndpoint documents from YAML or dicts, with friendly errors."""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from graft.api.endpoint import ModelEndpoint
from graft.api.errors import FieldError, SpecError, format_validation_error
from graft.api.spec import FineTuneJob, FineTuneJobSpec

KINDS: dict[str, type[BaseModel]] = {"FineTuneJob": FineTuneJob, "ModelEndpoint": ModelEndpoint}
M = TypeVar("M", bound=BaseModel)


def read_documents(path: str | Path) -> list[dict[str, Any]]:
    """Every non-empty YAML document in a file, as dicts."""
    p = Path(path)
    if not p.is_file():
        raise SpecError([FieldError("", f"file {str(p)!r} does not exist")], source=str(p))
    try:
        docs = [d for d in yaml.safe_load_all(p.read_text()) if d is not None]
    except yaml.YAMLError as exc:
        raise SpecError([FieldError("", f"not valid YAML: {exc}")], source=str(p)) from exc
    for i, doc in enumerate(docs):
        if not isinstance(doc, dict):
            raise SpecError([FieldError(f"document {i + 1}", "must be a mapping with apiVersion, kind, metadata and spec")], source=str(p))
    return docs


def parse_object(doc: dict[str, Any], source: str | None = None) -> BaseModel:
    """Parse a FineTuneJob or ModelEndpoint document by its kind."""
    kind = doc.get("kind", "FineTuneJob")
    model = KINDS.get(kind)
    if model is None:
        raise SpecError([FieldError("kind", f"{kind!r} is not one of {', '.join(KINDS)}")], source=source)
    return parse_as(model, doc, source)


def parse_as(model: type[M], doc: dict[str, Any], source: str | None = None, prefix: str = "") -> M:
    try:
        return model.model_validate(doc)
    except ValidationError as exc:
        raise SpecError(format_validation_error(exc, model, prefix=prefix), source=source) from exc


def parse_spec(spec: dict[str, Any], source: str | None = None) -> FineTuneJobSpec:
    """Parse only a spec (as the operator receives it), with paths prefixed by `spec.`."""
    return parse_as(FineTuneJobSpec, spec, source, prefix="spec")


def load_job(path: str | Path) -> FineTuneJob:
    """The first FineTuneJob in a YAML file."""
    docs = read_documents(path)
    jobs = [d for d in docs if d.get("kind", "FineTuneJob") == "FineTuneJob"]
    if not jobs:
        raise SpecError([FieldError("kind", "the file holds no FineTuneJob")], source=str(path))
    return parse_as(FineTuneJob, jobs[0], source=str(path))
