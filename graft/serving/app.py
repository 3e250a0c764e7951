"""The Ray Serve application: `POST /predict` and `GET /healthz` over an exported classifier.

Deployed by import path `graft.serving.app:build_app` with `ServeArgs` as args (RayService
`serveConfigV2`, Serve REST API) or locally by `graft.serving.deploy.deploy_local`.
"""

# No `from __future__ import annotations` here: FastAPI must see the real `Request` annotation
# through Serve's ingress wrapper, or it treats `request` as a query parameter.

import asyncio
import math
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import ray
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from ray import serve

from graft.serving import protocols
from graft.serving.args import DEPLOYMENT_NAME, ServeArgs, max_ongoing_requests
from graft.serving.auth import BearerTokenMiddleware, check_token_present
from graft.serving.isolation import Rejected, each_or_rejected, first_rejection, read_body
from graft.serving.model import LoadedModel, resolve_model_dir
from graft.serving.protocol import Limits, RequestError, decode_json, parse_predict_request, prediction

api = FastAPI(title="Graft text classifier")
api.add_middleware(BearerTokenMiddleware)


@dataclass
class BatchStats:
    """Forward passes run by @serve.batch on this replica: how many, and how full."""

    batches: int = 0
    texts: int = 0
    largest_batch: int = 0

    def record(self, size: int) -> None:
        self.batches += 1
        self.texts += size
        self.largest_batch = max(self.largest_batch, size)


def _set_torch_threads(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)


def replica_threads(args: ServeArgs) -> int:
    """torch threads: the args' torchThreads, else the CPUs Ray assigned to this replica (at least 1)."""
    if args.torch_threads is not None:
        return args.torch_threads
    cpus = ray.get_runtime_context().get_assigned_resources().get("CPU", 1.0)
    return max(1, math.floor(cpus))


@serve.deployment(name=DEPLOYMENT_NAME)
@serve.ingress(api)
class TextClassifier:
    def __init__(self, args: ServeArgs) -> None:
        check_token_present(args.require_bearer_token)
        self._args = args
        threads = replica_threads(args)
        self._model = LoadedModel.load(args, resolve_model_dir(args.model_uri), threads)
        # One inference thread: forwards run one after another, off the replica's event loop.
        self._executor = ThreadPoolExecutor(max_workers=1, initializer=_set_torch_threads, initargs=(threads,))
        self._threads = threads
        self._limits = Limits(args.max_text_length, args.max_texts_per_request)
        self._stats = BatchStats()
        self._classify.set_max_batch_size(args.max_batch_size)
        self._classify.set_batch_wait_timeout_s(args.batch_wait_timeout_s)

    @serve.batch(max_batch_size=8, batch_wait_timeout_s=0.02)
    async def _classify(self, texts: list[str]) -> list[list[float] | Rejected]:
        """One forward for the batch; a text the tokenizer or model refuses is `Rejected` on its
        own, so the other requests in the batch still get their predictions."""
        self._stats.record(len(texts))
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, each_or_rejected, self._model.probabilities, texts)

    async def _body(self, request: Request, example: str) -> Any:
        # Declared or chunked, the body stops being read once it passes the limit.
        raw = await read_body(request.stream(), self._limits.max_body_bytes, request.headers.get("content-length"))
        return decode_json(raw, self._limits, example)

    async def _scores(self, texts: list[str]) -> list[list[float]]:
        """Scores per text; a RequestError (422) naming the first text of this request the model
        refused (the other requests of the same batch are not affected)."""
        # Each text joins the batch queue on its own, so texts of concurrent requests share forwards.
        results = await asyncio.gather(*(self._classify(t) for t in texts))
        rejected = first_rejection(results, lambda i: "text" if len(texts) == 1 else f"texts[{i}]")
        if rejected is not None:
            raise rejected
        return [r for r in results if not isinstance(r, Rejected)]

    def _model_name(self) -> str:
        return self._args.served_model_name or str(serve.get_replica_context().app_name)

    def _unknown_model(self, name: str) -> JSONResponse | None:
        if name != self._model_name():
            return JSONResponse({"error": f"model {name!r} is not served here; this endpoint serves {self._model_name()!r}"},
                                status_code=404)
        return None

    @api.post("/predict")
    async def predict(self, request: Request) -> JSONResponse:
        """Graft's own shape ({"text"} / {"texts"}), or TEI's ({"inputs"})."""
        try:
            body = await self._body(request, protocols.TEI_EXAMPLE)
            tei = isinstance(body, dict) and "inputs" in body
            texts = protocols.parse_tei(body, self._limits) if tei else parse_predict_request(body, self._limits)
            scores = await self._scores(texts)
        except RequestError as err:
            return JSONResponse({"error": err.message}, status_code=err.status)
        if tei:
            return JSONResponse(protocols.tei_response(scores, self._model.label_names))
        return JSONResponse(
            {
                "predictions": [prediction(p, self._model.label_names) for p in scores],
                "model_version": self._args.model_version,
            }
        )

    @api.post("/v1/models/{name}:predict")
    async def predict_v1(self, name: str, request: Request) -> JSONResponse:
        """KServe v1: {"instances": [...]} -> {"predictions": [...]}."""
        if (missing := self._unknown_model(name)) is not None:
            return missing
        try:
            texts = protocols.parse_v1(await self._body(request, protocols.V1_EXAMPLE), self._limits)
            scores = await self._scores(texts)
        except RequestError as err:
            return JSONResponse({"error": err.message}, status_code=err.status)
        return JSONResponse({"predictions": [prediction(p, self._model.label_names) for p in scores]})

    @api.post("/v2/models/{name}/infer")
    async def infer_v2(self, name: str, request: Request) -> JSONResponse:
        """Open Inference Protocol v2 (KServe v2, Triton clients)."""
        if (missing := self._unknown_model(name)) is not None:
            return missing
        try:
            texts, request_id = protocols.parse_v2(await self._body(request, protocols.V2_EXAMPLE), self._limits)
            scores = await self._scores(texts)
        except RequestError as err:
            return JSONResponse({"error": err.message}, status_code=err.status)
        return JSONResponse(protocols.v2_response(name, self._args.model_version, request_id, scores, self._model.label_names))

    @api.get("/v2/models/{name}")
    async def metadata_v2(self, name: str) -> JSONResponse:
        if (missing := self._unknown_model(name)) is not None:
            return missing
        return JSONResponse(protocols.v2_metadata(name, self._args.model_version, self._model.label_names))

    @api.get("/v2/health/ready")
    async def ready_v2(self) -> dict[str, bool]:
        return {"ready": True}

    @api.get("/healthz")
    async def healthz(self) -> dict[str, Any]:
        return {
            "status": "ok",
            "model_uri": self._args.model_uri,
            "model_dir": str(self._model.model_dir),
            "model_version": self._args.model_version,
            "labels": self._model.label_names,
            "device": str(self._model.device),
            "torch_threads": self._threads,
            "max_seq_length": self._args.max_seq_length,
            "max_text_length": self._args.max_text_length,
            "max_texts_per_request": self._args.max_texts_per_request,
            "batching": {
                "max_batch_size": self._args.max_batch_size,
                "batch_wait_timeout_s": self._args.batch_wait_timeout_s,
                "batches": self._stats.batches,
                "texts": self._stats.texts,
                "largest_batch": self._stats.largest_batch,
            },
        }


def application(args: ServeArgs | dict[str, Any], deployment_options: dict[str, Any] | None = None) -> serve.Application:
    """The application with explicit deployment options (the `deployments[0]` entry of `serve_config`)."""
    parsed = ServeArgs.parse(args)
    options = {"max_ongoing_requests": max_ongoing_requests(parsed)}
    options.update({k: v for k, v in (deployment_options or {}).items() if k != "name"})
    if parsed.task == "causal-lm":
        from graft.serving import llm_app

        return llm_app.application(parsed, options)
    if parsed.task == "image-classification":
        from graft.serving import image_app

        return image_app.ImageClassifier.options(**options).bind(parsed)
    return TextClassifier.options(**options).bind(parsed)


def build_app(args: dict[str, Any]) -> serve.Application:
    """Serve's app builder: `import_path: graft.serving.app:build_app` with `ServeArgs` as `args`.

    Deployment options (autoscaling, resources) come from the Serve config's `deployments` entry.
    """
    return application(args)
