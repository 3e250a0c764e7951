"""Ray Serve deployment for exported image classifiers: `POST /predict` with images, `GET /healthz`.

Reached through the one import path `graft.serving.app:build_app`, which dispatches here when
`args.task` is image-classification (or the model directory is a Graft image export).
Images of concurrent requests share forward passes through `@serve.batch`.
"""

# No `from __future__ import annotations`: FastAPI must see the real `Request` annotation.

import asyncio
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from ray import serve

from graft.serving.args import ServeArgs
from graft.serving.auth import BearerTokenMiddleware, check_token_present
from graft.serving.image_protocol import ImageLimits, parse_image_request
from graft.serving.isolation import Rejected, each_or_rejected, first_rejection, read_body
from graft.serving.model import ModelLoadError, pick_device, resolve_model_dir
from graft.serving.protocol import RequestError, prediction

IMAGE_DEPLOYMENT = "ImageClassifier"
# Requests decoding images at once on one replica: decoding runs off the event loop, and each
# request's pixels are bounded (maxPixelsPerRequest), so a replica decodes at most this many
# bounded requests at a time; the others wait their turn.
DECODE_THREADS = 2
image_api = FastAPI(title="Graft image classifier")
image_api.add_middleware(BearerTokenMiddleware)


@dataclass
class LoadedImageModel:
    """An exported Graft image model in eval mode with its evaluation preprocessing."""

    model_dir: Path
    model: Any
    preprocess: Any
    label_names: list[str]
    device: Any

    @classmethod
    def load(cls, args: ServeArgs, model_dir: Path, threads: int) -> "LoadedImageModel":
        import torch

        from graft.jobs.tasks.image_model import GRAFT_MODEL_FILE, ModelSourceError, load_exported
        from graft.jobs.tasks.image_transforms import Preprocess

        torch.set_num_threads(threads)
        if not (model_dir / GRAFT_MODEL_FILE).is_file():
            raise ModelLoadError(f"{model_dir} has no {GRAFT_MODEL_FILE}; serve a model exported by an image-classification FineTuneJob")
        try:
            model = load_exported(model_dir)
        except (ModelSourceError, OSError, ValueError, KeyError) as exc:
            raise ModelLoadError(f"cannot load the image model in {model_dir}: {exc}") from exc
        import json

        labels = list(args.label_names or json.loads((model_dir / GRAFT_MODEL_FILE).read_text())["label_names"])
        device = pick_device(args.device)
        model.to(device)
        model.eval()
        return cls(model_dir, model, Preprocess(model.model_input), labels, device)

    def probabilities(self, tensors: list[Any]) -> list[list[float]]:
        import torch

        with torch.inference_mode():
            logits = self.model(torch.stack(tensors).to(self.device))
        return torch.softmax(logits.float(), dim=-1).cpu().tolist()


@serve.deployment(name=IMAGE_DEPLOYMENT)
@serve.ingress(image_api)
class ImageClassifier:
    def __init__(self, args: ServeArgs) -> None:
        from graft.serving.app import BatchStats, _set_torch_threads, replica_threads

        check_token_present(args.require_bearer_token)
        self._args = args
        threads = replica_threads(args)
        self._model = LoadedImageModel.load(args, resolve_model_dir(args.model_uri), threads)
        self._executor = ThreadPoolExecutor(max_workers=1, initializer=_set_torch_threads, initargs=(threads,))
        self._threads = threads
        self._limits = ImageLimits(args.max_image_bytes, args.max_texts_per_request, args.max_image_pixels, args.max_pixels_per_request)
        self._decoder = ThreadPoolExecutor(max_workers=DECODE_THREADS, thread_name_prefix="decode")
        self._stats = BatchStats()
        self._classify.set_max_batch_size(args.max_batch_size)
        self._classify.set_batch_wait_timeout_s(args.batch_wait_timeout_s)

    @serve.batch(max_batch_size=8, batch_wait_timeout_s=0.02)
    async def _classify(self, tensors: list[Any]) -> list[list[float] | Rejected]:
        """One forward for the batch; an image the model refuses is `Rejected` on its own."""
        self._stats.record(len(tensors))
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, each_or_rejected, self._model.probabilities, tensors)

    def _tensors(self, body: bytes, content_type: str) -> list[Any]:
        """The request's images as model inputs (on a decode thread: pixel limits checked on the
        headers first, then each image decoded and preprocessed)."""
        return [self._model.preprocess.eval(img) for img in parse_image_request(body, content_type, self._limits)]

    @image_api.post("/predict")
    async def predict(self, request: Request) -> JSONResponse:
        content_type = request.headers.get("content-type", "")
        try:
            raw_image = content_type.split(";")[0].strip().lower().startswith("image/")
            limit = self._limits.max_image_bytes if raw_image else self._limits.max_body_bytes
            # Declared or chunked, the body stops being read once it passes the limit.
            body = await read_body(request.stream(), limit, request.headers.get("content-length"))
            loop = asyncio.get_running_loop()
            tensors = await loop.run_in_executor(self._decoder, self._tensors, body, content_type)
            results = await asyncio.gather(*(self._classify(t) for t in tensors))
            rejected = first_rejection(results, lambda i: "the image" if len(tensors) == 1 else f"images[{i}]")
            if rejected is not None:
                raise rejected
        except RequestError as err:
            return JSONResponse({"error": err.message}, status_code=err.status)
        scores = [r for r in results if not isinstance(r, Rejected)]
        return JSONResponse({"predictions": [prediction(p, self._model.label_names) for p in scores], "model_version": self._args.model_version})

    @image_api.get("/healthz")
    async def healthz(self) -> dict[str, Any]:
        mi = self._model.model.model_input
        return {
            "status": "ok",
            "task": "image-classification",
            "model_uri": self._args.model_uri,
            "model_dir": str(self._model.model_dir),
            "model_version": self._args.model_version,
            "labels": self._model.label_names,
            "device": str(self._model.device),
            "torch_threads": self._threads,
            "image_size": mi.image_size,
            "max_image_bytes": self._args.max_image_bytes,
            "max_images_per_request": self._args.max_texts_per_request,
            "max_image_pixels": self._args.max_image_pixels,
            "max_pixels_per_request": self._args.max_pixels_per_request,
            "parameters": self._model.model.num_parameters(),
            "batching": {
                "max_batch_size": self._args.max_batch_size,
                "batch_wait_timeout_s": self._args.batch_wait_timeout_s,
                "batches": self._stats.batches,
                "images": self._stats.texts,
                "largest_batch": self._stats.largest_batch,
            },
        }
