"""Turn pydantic validation errors into messages that name the field path and what is allowed."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ValidationError


@dataclass(frozen=True)
class FieldError:
    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" if self.path else self.message


class SpecError(ValueError):
    """A spec that cannot run; carries every problem found, each with its field path."""

    def __init__(self, errors: list[FieldError], source: str | None = None) -> None:
        self.errors = errors
        self.source = source
        head = f"{source}: " if source else ""
        super().__init__(head + "; ".join(str(e) for e in errors))

    def report(self) -> str:
        head = f"{self.source} is not a valid FineTuneJob" if self.source else "invalid FineTuneJob"
        lines = [f"{head} ({len(self.errors)} error{'s' if len(self.errors) != 1 else ''}):"]
        lines += [f"  - {e}" for e in self.errors]
        return "\n".join(lines)


def _path(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            # Union branches (e.g. "function-after[...]") are not fields.
            if "[" in part and "]" in part:
                continue
            out += ("." if out else "") + part
    return out


def _show(value: Any) -> str:
    if isinstance(value, str):
        return repr(value)
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list):
        return "a list"
    return str(value)


def _allowed_fields(model: type[BaseModel] | None, loc: tuple[int | str, ...]) -> list[str]:
    """Wire names of the fields allowed next to the unknown one, found by walking the model."""
    current: Any = model
    for part in loc[:-1]:
        if current is None or isinstance(part, int):
            continue
        fields = getattr(current, "model_fields", {})
        match = next((f for n, f in fields.items() if part in (n, f.alias)), None)
        if match is None:
            # A dict value (e.g. searchSpace.learningRate) keeps the current value type.
            current = _value_model(current)
            continue
        current = _value_model(match.annotation)
    fields = getattr(current, "model_fields", None)
    if not fields:
        return []
    return [f.alias or n for n, f in fields.items()]


def _value_model(annotation: Any) -> Any:
    """The BaseModel inside an annotation such as `X | None`, `list[X]` or `dict[str, X]`."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()) or ():
        found = _value_model(arg)
        if found is not None:
            return found
    return None


def _message(err: dict[str, Any], model: type[BaseModel] | None) -> str:
    kind = err["type"]
    ctx = err.get("ctx", {}) or {}
    value = err.get("input")
    if kind == "literal_error" or kind == "enum":
        expected = ctx.get("expected", "").replace("'", "").replace(" or ", ", ")
        return f"{_show(value)} is not one of {expected}"
    if kind == "extra_forbidden":
        allowed = _allowed_fields(model, tuple(err["loc"]))
        hint = f"; allowed fields: {', '.join(allowed)}" if allowed else ""
        return f"unknown field{hint}"
    if kind == "missing":
        return "required field is missing"
    if kind in ("greater_than", "greater_than_equal", "less_than", "less_than_equal"):
        op = {"greater_than": ">", "greater_than_equal": ">=", "less_than": "<", "less_than_equal": "<="}[kind]
        bound = next(iter(ctx.values()))
        return f"{_show(value)} must be {op} {bound}"
    if kind == "string_pattern_mismatch":
        return f"{_show(value)} does not match {ctx.get('pattern')}"
    if kind == "string_too_short":
        return "must not be empty"
    if kind == "value_error":
        return str(ctx.get("error", err["msg"]))
    if kind.endswith("_type") or kind.endswith("_parsing"):
        return f"{_show(value)} is not valid: {err['msg'][0].lower()}{err['msg'][1:]}"
    return err["msg"]


def format_validation_error(exc: ValidationError, model: type[BaseModel] | None = None, prefix: str = "") -> list[FieldError]:
    """One FieldError per problem, with camelCase field paths such as spec.training.deepspeed.zeroStage."""
    out: list[FieldError] = []
    for err in exc.errors(include_url=False):
        loc = tuple(err["loc"])
        path = _path(loc)
        if prefix:
            path = f"{prefix}.{path}" if path else prefix
        out.append(FieldError(path, _message(dict(err), model)))
    return out
