"""Typed views of the API objects the loop reads: the spec parsed with its semantic checks, and the
status the operator wrote last (fields of another operator version ignored)."""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from graft.api.endpoint import ModelEndpoint, ModelEndpointSpec, ModelEndpointStatus
from graft.api.load import parse_as, parse_spec
from graft.api.spec import FineTuneJob, ObjectMeta
from graft.api.status import FineTuneJobStatus

Raw = dict[str, Any]


def known(model: type[FineTuneJobStatus] | type[ModelEndpointStatus], status: dict[str, Any] | None) -> dict[str, Any]:
    fields = {f.alias or n for n, f in model.model_fields.items()}
    return {key: v for key, v in (status or {}).items() if key in fields}


def previous_status(model: type[FineTuneJobStatus] | type[ModelEndpointStatus], raw: Raw) -> Any:
    """The status the operator wrote last (None before its first write, or when unreadable)."""
    if not (raw.get("status") or {}).get("phase"):
        return None
    try:
        return model.model_validate(known(model, raw.get("status")))
    except ValidationError:
        return None


def _meta(raw: Raw) -> ObjectMeta:
    m = raw["metadata"]
    return parse_as(ObjectMeta, {"name": m["name"], "namespace": m.get("namespace"), "labels": m.get("labels") or {},
                                 "annotations": {}, "uid": m.get("uid"), "generation": m.get("generation")}, prefix="metadata")


def parse_job(raw: Raw) -> FineTuneJob:
    """The typed FineTuneJob of an API object; SpecError names each bad field (semantic checks)."""
    return FineTuneJob(metadata=_meta(raw), spec=parse_spec(dict(raw.get("spec") or {})))


def parse_endpoint(raw: Raw) -> ModelEndpoint:
    return ModelEndpoint(metadata=_meta(raw), spec=parse_as(ModelEndpointSpec, dict(raw.get("spec") or {}), prefix="spec"))
