"""The /predict request and response: pure parsing and formatting, no Serve or torch needed.

Every bad request maps to a `RequestError` with a 4xx status and a message that says what to fix.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

EXAMPLE = '{"text": "great movie"} or {"texts": ["great movie", "awful plot"]}'


@dataclass(frozen=True)
class Limits:
    max_text_length: int
    max_texts_per_request: int

    @property
    def max_body_bytes(self) -> int:
        """The largest body a valid request can be (every character JSON-escaped as a surrogate pair)."""
        return self.max_texts_per_request * (12 * self.max_text_length + 8) + 1024


def check_body_size(size: int, limits: Limits) -> None:
    if size > limits.max_body_bytes:
        raise RequestError(
            413,
            f"the request body has {size} bytes, more than the {limits.max_body_bytes} that "
            f"{limits.max_texts_per_request} texts of {limits.max_text_length} characters can take; send fewer or shorter texts",
        )


class RequestError(ValueError):
    """A client error: `status` is 400 (not JSON), 413 (too large) or 422 (wrong shape)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def check_text(value: Any, where: str, limits: Limits) -> str:
    if not isinstance(value, str):
        raise RequestError(422, f"{where} must be a string, got {type_name(value)}; send {EXAMPLE}")
    if not value.strip():
        raise RequestError(422, f"{where} is empty; send non-blank text")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:  # lone surrogates (JSON "\ud800") break tokenizers
        raise RequestError(422, f"{where} is not valid Unicode text ({exc.reason} at position {exc.start}); send UTF-8 text") from exc
    if len(value) > limits.max_text_length:
        raise RequestError(
            413,
            f"{where} has {len(value)} characters, more than the limit of {limits.max_text_length}; "
            "shorten it or split it into several texts",
        )
    return value


def type_name(value: Any) -> str:
    if value is None:
        return "null"
    return {bool: "a boolean", int: "a number", float: "a number", list: "a list", dict: "an object", str: "a string"}.get(
        type(value), type(value).__name__
    )


def decode_json(raw: bytes, limits: Limits, example: str = EXAMPLE) -> Any:
    """The decoded JSON of a request body within the size limit; RequestError (400/413) otherwise."""
    check_body_size(len(raw), limits)
    if not raw.strip():
        raise RequestError(400, f"the request body is empty; send JSON such as {example}")
    try:
        return json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise RequestError(400, f"the request body is not valid JSON ({exc}); send {example}") from exc


def parse_predict_body(raw: bytes, limits: Limits) -> list[str]:
    """The texts of a /predict body, in order; raises RequestError for anything else."""
    return parse_predict_request(decode_json(raw, limits), limits)


def parse_predict_request(body: Any, limits: Limits) -> list[str]:
    """The texts of an already decoded /predict body."""
    if not isinstance(body, dict):
        raise RequestError(422, f"the body must be a JSON object, got {type_name(body)}; send {EXAMPLE}")
    unknown = sorted(set(body) - {"text", "texts"})
    if unknown:
        raise RequestError(422, f"unknown field(s) {', '.join(unknown)}; the body takes exactly one of text or texts (or inputs, as TEI clients send)")
    if "text" in body and "texts" in body:
        raise RequestError(422, "send either text or texts, not both")
    if "text" in body:
        return [check_text(body["text"], "text", limits)]
    if "texts" in body:
        texts = body["texts"]
        if not isinstance(texts, list):
            raise RequestError(422, f"texts must be a list of strings, got {type_name(texts)}; send {EXAMPLE}")
        if not texts:
            raise RequestError(422, "texts is an empty list; send at least one text")
        if len(texts) > limits.max_texts_per_request:
            raise RequestError(
                413,
                f"texts has {len(texts)} items, more than the limit of {limits.max_texts_per_request}; "
                "split them over several requests",
            )
        return [check_text(t, f"texts[{i}]", limits) for i, t in enumerate(texts)]
    raise RequestError(422, f"missing field text (or texts); send {EXAMPLE}")


def prediction(probabilities: list[float], label_names: list[str]) -> dict[str, Any]:
    """{"label": best label, "scores": {label: probability}} for one text."""
    if len(probabilities) != len(label_names):
        raise ValueError(f"{len(probabilities)} scores for {len(label_names)} labels")
    best = max(range(len(probabilities)), key=probabilities.__getitem__)
    return {"label": label_names[best], "scores": {n: float(p) for n, p in zip(label_names, probabilities, strict=True)}}
