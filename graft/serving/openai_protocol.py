"""OpenAI-compatible request parsing and response shapes: pure, no Serve or torch needed.

Covers `POST /v1/chat/completions` and `POST /v1/completions` (streaming and not) and
`GET /v1/models`. Every bad request maps to an `ApiError` whose body is OpenAI's error shape
(`{"error": {"message", "type", "param", "code"}}`), so OpenAI client libraries raise their
usual `BadRequestError` / `NotFoundError` with the message.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Literal

MAX_STOP = 4
# Fields OpenAI defines that this server accepts only at their neutral value.
NEUTRAL = {"n": 1, "frequency_penalty": 0, "presence_penalty": 0, "logprobs": (False, None), "echo": False, "suffix": None, "best_of": 1}
COMMON = {"model", "max_tokens", "temperature", "top_p", "stop", "seed", "stream", "stream_options", "user", *NEUTRAL}
CHAT_FIELDS = COMMON | {"messages", "max_completion_tokens"}
COMPLETION_FIELDS = COMMON | {"prompt"}
ROLES = ("system", "user", "assistant")


class ApiError(ValueError):
    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.param, self.code = status, message, param, code

    def body(self) -> dict[str, Any]:
        kind = "invalid_request_error" if self.status < 500 else "server_error"
        return {"error": {"message": self.message, "type": kind, "param": self.param, "code": self.code}}


@dataclass(frozen=True)
class Limits:
    max_text_length: int  # characters of prompt text (all messages together)
    max_tokens: int  # most tokens one request may generate
    max_body_bytes: int = 0  # 0: derived from max_text_length

    @property
    def body_bytes(self) -> int:
        return self.max_body_bytes or 12 * self.max_text_length + 64 * 1024


@dataclass
class GenerationRequest:
    kind: Literal["chat", "completion"]
    model: str
    messages: list[dict[str, str]] | None = None
    prompt: str | None = None
    max_tokens: int = 16
    temperature: float = 1.0
    top_p: float = 1.0
    stop: list[str] = field(default_factory=list)
    seed: int | None = None
    stream: bool = False
    include_usage: bool = False
    max_tokens_given: bool = False  # False: max_tokens is the endpoint's default and may shrink to fit the context


def decode_body(raw: bytes, limits: Limits) -> dict[str, Any]:
    if len(raw) > limits.body_bytes:
        raise ApiError(413, f"the request body has {len(raw)} bytes, more than the limit of {limits.body_bytes}; send a shorter prompt")
    try:
        body = json.loads(raw) if raw.strip() else None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ApiError(400, f"the request body is not valid JSON: {exc}") from exc
    if not isinstance(body, dict):
        raise ApiError(400, "the request body must be a JSON object such as {\"model\": ..., \"messages\": [...]}")
    return body


def _number(body: dict[str, Any], name: str, default: float, low: float, high: float, low_open: bool = False) -> float:
    value = body.get(name)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ApiError(400, f"{name} must be a number, got {value!r}", param=name)
    if value > high or value < low or (low_open and value == low):
        bound = f"({low:g}, {high:g}]" if low_open else f"[{low:g}, {high:g}]"
        raise ApiError(400, f"{name} is {value}; it must be in {bound}", param=name)
    return float(value)


def _max_tokens(body: dict[str, Any], name: str, default: int, limits: Limits) -> int:
    value = body.get(name)
    if value is None:
        return min(default, limits.max_tokens)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ApiError(400, f"{name} must be a positive integer, got {value!r}", param=name)
    if value > limits.max_tokens:
        raise ApiError(400, f"{name} is {value}, more than this endpoint allows ({limits.max_tokens}); ask for fewer tokens", param=name)
    return value


def _stop(value: Any) -> list[str]:
    if value is None:
        return []
    stops = [value] if isinstance(value, str) else value
    if not isinstance(stops, list) or not all(isinstance(s, str) and s for s in stops):
        raise ApiError(400, "stop must be a non-empty string or a list of non-empty strings", param="stop")
    if len(stops) > MAX_STOP:
        raise ApiError(400, f"stop has {len(stops)} sequences; at most {MAX_STOP} are allowed", param="stop")
    return list(stops)


def _common(body: dict[str, Any], allowed: set[str], served_model: str, limits: Limits) -> dict[str, Any]:
    unknown = sorted(set(body) - allowed)
    if unknown:
        raise ApiError(400, f"unknown field(s): {', '.join(unknown)}", param=unknown[0])
    for name, neutral in NEUTRAL.items():
        ok = neutral if isinstance(neutral, tuple) else (neutral,)
        if name in body and body[name] not in ok:
            raise ApiError(400, f"{name}={body[name]!r} is not supported by this endpoint; leave it out", param=name)
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise ApiError(400, f"model is required; this endpoint serves {served_model!r}", param="model")
    if model != served_model:
        raise ApiError(404, f"the model {model!r} does not exist here; this endpoint serves {served_model!r} (see GET /v1/models)", param="model", code="model_not_found")
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise ApiError(400, "stream must be true or false", param="stream")
    options = body.get("stream_options")
    if options is not None and (not isinstance(options, dict) or set(options) - {"include_usage"}):
        raise ApiError(400, "stream_options takes only {\"include_usage\": true|false}", param="stream_options")
    seed = body.get("seed")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise ApiError(400, f"seed must be an integer, got {seed!r}", param="seed")
    return {
        "model": model,
        "temperature": _number(body, "temperature", 1.0, 0.0, 2.0),
        "top_p": _number(body, "top_p", 1.0, 0.0, 1.0, low_open=True),
        "stop": _stop(body.get("stop")),
        "seed": seed,
        "stream": stream,
        "include_usage": bool((options or {}).get("include_usage", False)),
    }


def _content(value: Any, where: str) -> str:
    """Message content: a string, or a list of {"type": "text", "text": ...} parts joined."""
    if isinstance(value, str):
        return value
    if isinstance(value, list) and all(isinstance(p, dict) and p.get("type") == "text" and isinstance(p.get("text"), str) for p in value):
        return "".join(p["text"] for p in value)
    raise ApiError(400, f"{where} must be a string or a list of text parts; images and audio are not supported", param=where)


def parse_chat(body: dict[str, Any], served_model: str, limits: Limits) -> GenerationRequest:
    common = _common(body, CHAT_FIELDS, served_model, limits)
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise ApiError(400, "messages must be a non-empty list of {\"role\", \"content\"} objects", param="messages")
    out: list[dict[str, str]] = []
    for i, msg in enumerate(messages):
        if not isinstance(msg, dict) or msg.get("role") not in ROLES:
            raise ApiError(400, f"messages[{i}].role must be one of {', '.join(ROLES)}", param=f"messages[{i}].role")
        out.append({"role": msg["role"], "content": _content(msg.get("content"), f"messages[{i}].content")})
    _check_length(sum(len(m["content"]) for m in out), "messages", limits)
    name = "max_completion_tokens" if body.get("max_completion_tokens") is not None else "max_tokens"
    max_tokens = _max_tokens(body, name, limits.max_tokens, limits)
    return GenerationRequest(kind="chat", messages=out, max_tokens=max_tokens, max_tokens_given=body.get(name) is not None, **common)


def parse_completion(body: dict[str, Any], served_model: str, limits: Limits) -> GenerationRequest:
    common = _common(body, COMPLETION_FIELDS, served_model, limits)
    prompt = body.get("prompt")
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str):
        prompt = prompt[0]
    if not isinstance(prompt, str):
        raise ApiError(400, "prompt must be a string (one prompt per request)", param="prompt")
    _check_length(len(prompt), "prompt", limits)
    return GenerationRequest(
        kind="completion", prompt=prompt, max_tokens=_max_tokens(body, "max_tokens", 16, limits), max_tokens_given=body.get("max_tokens") is not None, **common
    )


def _check_length(chars: int, param: str, limits: Limits) -> None:
    if chars > limits.max_text_length:
        raise ApiError(400, f"{param} has {chars} characters, more than the limit of {limits.max_text_length}; shorten it", param=param, code="context_length_exceeded")


# -- responses ------------------------------------------------------------------------------------


def usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens, "total_tokens": prompt_tokens + completion_tokens}


def completion_body(req: GenerationRequest, rid: str, created: int, text: str, finish: str, use: dict[str, int]) -> dict[str, Any]:
    if req.kind == "chat":
        choice: dict[str, Any] = {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": finish, "logprobs": None}
        obj = "chat.completion"
    else:
        choice = {"index": 0, "text": text, "finish_reason": finish, "logprobs": None}
        obj = "text_completion"
    return {"id": rid, "object": obj, "created": created, "model": req.model, "choices": [choice], "usage": use}


def chunk_body(req: GenerationRequest, rid: str, created: int, delta: str | None, finish: str | None, *, first: bool = False) -> dict[str, Any]:
    """One streamed chunk: a text delta, or (with `finish`) the last chunk of the choice."""
    if req.kind == "chat":
        d: dict[str, Any] = {}
        if first:
            d["role"] = "assistant"
        if delta:
            d["content"] = delta
        choice: dict[str, Any] = {"index": 0, "delta": d, "finish_reason": finish, "logprobs": None}
        obj = "chat.completion.chunk"
    else:
        choice = {"index": 0, "text": delta or "", "finish_reason": finish, "logprobs": None}
        obj = "text_completion"
    return {"id": rid, "object": obj, "created": created, "model": req.model, "choices": [choice]}


def usage_chunk(req: GenerationRequest, rid: str, created: int, use: dict[str, int]) -> dict[str, Any]:
    obj = "chat.completion.chunk" if req.kind == "chat" else "text_completion"
    return {"id": rid, "object": obj, "created": created, "model": req.model, "choices": [], "usage": use}


def sse(data: dict[str, Any] | str) -> str:
    return f"data: {data if isinstance(data, str) else json.dumps(data)}\n\n"


def models_body(model_id: str, created: int) -> dict[str, Any]:
    return {"object": "list", "data": [{"id": model_id, "object": "model", "created": created, "owned_by": "graft"}]}
