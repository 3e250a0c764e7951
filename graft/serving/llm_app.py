"""The Ray Serve application for causal-LM models: an OpenAI-compatible API.

`POST /v1/chat/completions`, `POST /v1/completions` (both with `"stream": true` for server-sent
events), `GET /v1/models` and `GET /healthz`. `graft.serving.app:build_app` returns this
application when `args.task` is `causal-lm`.
"""

# No `from __future__ import annotations`: FastAPI must see the real `Request` annotation.

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse
from ray import serve

from graft.serving.args import TASK_DEPLOYMENTS, ServeArgs
from graft.serving.auth import BearerTokenMiddleware, check_token_present
from graft.serving.generation import LanguageModel, Step
from graft.serving.isolation import read_body
from graft.serving.openai_protocol import (
    ApiError,
    GenerationRequest,
    Limits,
    chunk_body,
    completion_body,
    decode_body,
    models_body,
    parse_chat,
    parse_completion,
    sse,
    usage,
    usage_chunk,
)
from graft.serving.protocol import RequestError

api = FastAPI(title="Graft language model (OpenAI-compatible)")
api.add_middleware(BearerTokenMiddleware)
# Generations running at once on one replica; more requests wait their turn (Serve queues beyond
# max_ongoing_requests).
GENERATION_THREADS = 8


def served_name(args: ServeArgs) -> str:
    if args.served_model_name:
        return args.served_model_name
    path = Path(args.model_uri.rstrip("/"))
    return (path.parent.name if path.name == "model" else path.name) or "model"


async def read_generation_request(
    request: Request, parse: Callable[..., GenerationRequest], limits: Limits, served: str
) -> GenerationRequest:
    """The parsed request; ApiError 413 as soon as the body (declared or chunked) passes the limit,
    without reading the rest."""
    try:
        raw = await read_body(request.stream(), limits.body_bytes, request.headers.get("content-length"))
    except RequestError as err:
        raise ApiError(err.status, f"{err.message} (a shorter prompt)") from err
    return parse(decode_body(raw, limits), served, limits)


def _error(err: ApiError) -> JSONResponse:
    return JSONResponse(err.body(), status_code=err.status)


@serve.deployment(name=TASK_DEPLOYMENTS["causal-lm"])
@serve.ingress(api)
class OpenAIServer:
    def __init__(self, args: ServeArgs) -> None:
        import torch

        from graft.serving.app import replica_threads
        from graft.serving.model import pick_device, resolve_model_dir

        check_token_present(args.require_bearer_token)
        self._args = args
        self._threads = replica_threads(args)
        torch.set_num_threads(self._threads)
        # The context is the model's (training's maxSeqLength only bounded the training rows).
        self._lm = LanguageModel.load(resolve_model_dir(args.model_uri), pick_device(args.device), trust_remote_code=args.trust_remote_code)
        self._name = served_name(args)
        self._created = int(time.time())
        self._limits = Limits(max_text_length=args.max_text_length, max_tokens=args.max_tokens)
        self._pool = ThreadPoolExecutor(max_workers=GENERATION_THREADS, thread_name_prefix="generate")
        self._requests = 0
        self._tokens = 0

    async def _parse(self, request: Request, parse: Callable[..., GenerationRequest]) -> GenerationRequest:
        return await read_generation_request(request, parse, self._limits, self._name)

    @api.post("/v1/chat/completions", response_model=None)
    async def chat(self, request: Request) -> JSONResponse | StreamingResponse:
        return await self._handle(request, parse_chat, "chatcmpl")

    @api.post("/v1/completions", response_model=None)
    async def completions(self, request: Request) -> JSONResponse | StreamingResponse:
        return await self._handle(request, parse_completion, "cmpl")

    async def _handle(self, request: Request, parse: Callable[..., GenerationRequest], prefix: str) -> JSONResponse | StreamingResponse:
        loop = asyncio.get_running_loop()
        try:
            req = await self._parse(request, parse)
            ids = await loop.run_in_executor(self._pool, self._lm.prompt_ids, req)
        except ApiError as err:
            return _error(err)
        rid, created = f"{prefix}-{uuid.uuid4().hex[:24]}", int(time.time())
        steps = self._lm.generate(req, ids)
        self._requests += 1
        if req.stream:
            return StreamingResponse(self._events(req, rid, created, steps), media_type="text/event-stream")
        text, last = [], Step()
        while (step := await loop.run_in_executor(self._pool, next, steps, None)) is not None:
            text.append(step.text)
            last = step
        self._tokens += last.completion_tokens
        use = usage(last.prompt_tokens, last.completion_tokens)
        return JSONResponse(completion_body(req, rid, created, "".join(text), last.finish or "length", use))

    async def _events(self, req: GenerationRequest, rid: str, created: int, steps: Iterator[Step]) -> AsyncIterator[str]:
        loop = asyncio.get_running_loop()
        first = True
        if req.kind == "chat":
            yield sse(chunk_body(req, rid, created, None, None, first=True))
            first = False
        while (step := await loop.run_in_executor(self._pool, next, steps, None)) is not None:
            if step.finish is None:
                yield sse(chunk_body(req, rid, created, step.text, None, first=first))
                first = False
                continue
            self._tokens += step.completion_tokens
            yield sse(chunk_body(req, rid, created, None, step.finish))
            if req.include_usage:
                yield sse(usage_chunk(req, rid, created, usage(step.prompt_tokens, step.completion_tokens)))
        yield sse("[DONE]")

    @api.get("/v1/models")
    async def models(self) -> dict[str, Any]:
        return models_body(self._name, self._created)

    @api.get("/healthz")
    async def healthz(self) -> dict[str, Any]:
        return {
            "status": "ok",
            "task": "causal-lm",
            "model": self._name,
            "model_uri": self._args.model_uri,
            "model_version": self._args.model_version,
            "device": str(self._lm.device),
            "torch_threads": self._threads,
            "max_context": self._lm.max_context,
            "max_tokens": self._limits.max_tokens,
            "max_text_length": self._limits.max_text_length,
            "requests": self._requests,
            "completion_tokens": self._tokens,
        }


def application(args: ServeArgs, options: dict[str, Any]) -> serve.Application:
    return OpenAIServer.options(**options).bind(args)
