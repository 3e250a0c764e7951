"""Generate the CustomResourceDefinitions from the pydantic models (never edit the YAML by hand).

Pydantic's JSON schema is not a structural CRD schema as it stands; this module inlines `$ref`s,
turns `X | None` into `nullable: true`, drops titles and `additionalProperties: false` (the API
server rejects unknown fields itself with strict field validation), and keeps the
`x-kubernetes-*` extensions the models declare.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import yaml
from pydantic import BaseModel

from graft.api.base import API_GROUP, API_VERSION
from graft.api.endpoint import ModelEndpointSpec, ModelEndpointStatus
from graft.api.spec import FineTuneJobSpec
from graft.api.status import FineTuneJobStatus

_DROP = {"title", "discriminator", "propertyNames", "examples"}


@dataclass(frozen=True)
class CrdInfo:
    kind: str
    plural: str
    singular: str
    short_names: list[str]
    spec_model: type[BaseModel]
    status_model: type[BaseModel]
    scope: str = "Namespaced"
    categories: list[str] = field(default_factory=lambda: ["graft", "all"])
    printer_columns: list[dict[str, Any]] = field(default_factory=list)
    spec_required: bool = True
    # Spec fields that may change after creation; every other top-level spec field gets a CEL
    # transition rule refusing an edit (None: the whole spec stays editable).
    mutable_spec_fields: frozenset[str] | None = None


def _resolve(node: Any, defs: dict[str, Any]) -> Any:
    if isinstance(node, list):
        return [_resolve(n, defs) for n in node]
    if not isinstance(node, dict):
        return node
    if "$ref" in node:
        target = defs[node["$ref"].split("/")[-1]]
        merged = {**target, **{k: v for k, v in node.items() if k != "$ref"}}
        return _resolve(merged, defs)
    if "allOf" in node and len(node["allOf"]) == 1:
        merged = {**node["allOf"][0], **{k: v for k, v in node.items() if k != "allOf"}}
        return _resolve(merged, defs)
    if "anyOf" in node:
        options = [o for o in node["anyOf"] if o.get("type") != "null"]
        nullable = len(options) != len(node["anyOf"])
        rest = {k: v for k, v in node.items() if k != "anyOf"}
        if len(options) == 1:
            merged = {**options[0], **rest}
            if nullable:
                merged["nullable"] = True
            return _resolve(merged, defs)
        types = {o.get("type") for o in options}
        if types <= {"integer", "number"}:
            merged = {**rest, "type": "number"}
        else:
            merged = {**rest, "x-kubernetes-preserve-unknown-fields": True}
        if nullable:
            merged["nullable"] = True
        return _resolve(merged, defs)
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in _DROP:
            continue
        if key == "additionalProperties" and value is False:
            continue
        if key == "additionalProperties" and value is True:
            # `dict[str, Any]`: the API server reads `true` as the empty schema for every value and
            # prunes the fields of nested objects; preserving unknown fields keeps them (below).
            continue
        if key == "default" and value is None:
            continue
        if key == "properties":
            out[key] = {k: _resolve(v, defs) for k, v in value.items()}
        else:
            out[key] = _resolve(value, defs)
    if "const" in out:
        out["enum"] = [out.pop("const")]
    # JSON Schema 2020 writes exclusive bounds as numbers; OpenAPI v3 (CRDs) wants a bound + a boolean.
    for bound, flag in (("minimum", "exclusiveMinimum"), ("maximum", "exclusiveMaximum")):
        if isinstance(out.get(flag), (int, float)) and not isinstance(out.get(flag), bool):
            out[bound] = out[flag]
            out[flag] = True
    # A node that preserves unknown fields may hold any JSON value (a structural schema needs no type
    # there): `searchSpace.*.values` items are numbers, strings or booleans, not objects.
    if out.get("type") == "object" and "properties" not in out and "additionalProperties" not in out:
        out["x-kubernetes-preserve-unknown-fields"] = True
    if "items" in out and isinstance(out["items"], dict) and not out["items"].get("type"):
        out["items"].setdefault("x-kubernetes-preserve-unknown-fields", True)
    return out


def structural_schema(model: type[BaseModel]) -> dict[str, Any]:
    """The model's schema in the form the Kubernetes API server accepts for a CRD."""
    schema = model.model_json_schema(by_alias=True, mode="validation")
    defs = schema.pop("$defs", {})
    return _resolve(schema, defs)


def _status_schema(model: type[BaseModel]) -> dict[str, Any]:
    schema = structural_schema(model)
    schema.pop("required", None)  # the operator writes status piecemeal
    # Status is written by the operator, not defaulted by the API server.
    return _strip_defaults(schema)


def _strip_defaults(node: Any) -> Any:
    if isinstance(node, dict):
        return {k: _strip_defaults(v) for k, v in node.items() if k != "default"}
    if isinstance(node, list):
        return [_strip_defaults(v) for v in node]
    return node


FINETUNEJOB = CrdInfo(
    kind="FineTuneJob",
    plural="finetunejobs",
    singular="finetunejob",
    short_names=["ftj"],
    spec_model=FineTuneJobSpec,
    status_model=FineTuneJobStatus,
    mutable_spec_fields=frozenset({"suspend"}),
    printer_columns=[
        {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
        {"name": "Trials", "type": "string", "jsonPath": ".status.progress.trials"},
        {"name": "Metric", "type": "string", "jsonPath": ".status.metric"},
        {"name": "Best", "type": "string", "jsonPath": ".status.bestMetric"},
        {"name": "ETA-Seconds", "type": "integer", "jsonPath": ".status.progress.etaSeconds", "priority": 1},
        {"name": "Endpoint", "type": "string", "jsonPath": ".status.endpoint"},
        {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
    ],
)

MODELENDPOINT = CrdInfo(
    kind="ModelEndpoint",
    plural="modelendpoints",
    singular="modelendpoint",
    short_names=["mep"],
    spec_model=ModelEndpointSpec,
    status_model=ModelEndpointStatus,
    printer_columns=[
        {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
        {"name": "Version", "type": "integer", "jsonPath": ".status.servedVersion"},
        {"name": "Score", "type": "number", "jsonPath": ".status.servedScore"},
        {"name": "Ready", "type": "integer", "jsonPath": ".status.readyReplicas"},
        {"name": "URL", "type": "string", "jsonPath": ".status.url"},
        {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
    ],
)

CRDS: list[CrdInfo] = [FINETUNEJOB, MODELENDPOINT]


def register(info: CrdInfo) -> None:
    """Add a CRD (e.g. the cluster-scoped policy) to the generated set."""
    if all(c.kind != info.kind for c in CRDS):
        CRDS.append(info)


def immutability_rules(kind: str, spec_schema: dict[str, Any], mutable: frozenset[str]) -> list[dict[str, str]]:
    """One CEL transition rule per top-level spec field not in `mutable`: an edit, an addition or a
    removal of the field after creation is refused by the API server with a message naming it."""
    rules = []
    for name in sorted(spec_schema.get("properties") or {}):
        if name in mutable:
            continue
        allowed = ", ".join(f"spec.{m}" for m in sorted(mutable)) or "nothing"
        rules.append({
            "rule": f"has(self.{name}) == has(oldSelf.{name}) && (!has(self.{name}) || self.{name} == oldSelf.{name})",
            "message": f"spec.{name} is immutable: delete the {kind} and create it again (only {allowed} can change)",
            "fieldPath": f".{name}",
            "reason": "FieldValueForbidden",
        })
    return rules


def build_crd(info: CrdInfo) -> dict[str, Any]:
    spec_schema = structural_schema(info.spec_model)
    spec_schema["description"] = f"Desired state of the {info.kind}."
    if info.mutable_spec_fields is not None:
        spec_schema.setdefault("x-kubernetes-validations", []).extend(
            immutability_rules(info.kind, spec_schema, info.mutable_spec_fields)
        )
    status_schema = _status_schema(info.status_model)
    status_schema["description"] = f"Observed state of the {info.kind}, written by the Graft operator."
    root: dict[str, Any] = {
        "type": "object",
        "description": f"{info.kind} ({API_GROUP}/{API_VERSION}): see docs/spec.md.",
        "properties": {
            "apiVersion": {"type": "string"},
            "kind": {"type": "string"},
            "metadata": {"type": "object"},
            "spec": spec_schema,
            "status": status_schema,
        },
    }
    if info.spec_required:
        root["required"] = ["spec"]
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": f"{info.plural}.{API_GROUP}",
            "labels": {"app.kubernetes.io/part-of": "graft"},
        },
        "spec": {
            "group": API_GROUP,
            "scope": info.scope,
            "names": {
                "kind": info.kind,
                "listKind": f"{info.kind}List",
                "plural": info.plural,
                "singular": info.singular,
                "shortNames": info.short_names,
                "categories": info.categories,
            },
            "versions": [
                {
                    "name": API_VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": info.printer_columns,
                    "schema": {"openAPIV3Schema": root},
                }
            ],
        },
    }


def crd_documents() -> list[dict[str, Any]]:
    """Every Graft CRD, as dicts."""
    _load_kinds()
    return [build_crd(info) for info in CRDS]


def render_crds() -> str:
    """Every Graft CRD as one multi-document YAML, stable byte for byte."""
    header = "# Generated by `graft crd` from graft/api; do not edit. Regenerate with `make crds`.\n"
    docs = [yaml.safe_dump(doc, sort_keys=True, width=120) for doc in crd_documents()]
    return header + "---\n".join(docs)


def _load_kinds() -> None:
    """Kinds defined in their own modules register themselves on import (imported here, not at the
    top: graft.api.policy imports this module)."""
    import graft.api.policy  # noqa: F401
