"""The image /predict request: raw `image/*` bodies or base64 images in JSON. Pure: no Serve, no torch.

    curl -X POST --data-binary @digit.png -H 'Content-Type: image/png' URL/predict
    curl -X POST -H 'Content-Type: application/json' -d '{"image": "<base64>"}' URL/predict
    ... -d '{"images": ["<base64>", "data:image/png;base64,<base64>"]}'

Every bad request maps to a `RequestError`: 400 (not JSON, not base64, not a decodable image),
413 (too large), 415 (a content type that is neither JSON nor an image), 422 (wrong JSON shape).
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from graft.jobs.tasks.image_decode import ImageError, decode_image
from graft.serving.protocol import RequestError, type_name

if TYPE_CHECKING:
    import numpy as np

EXAMPLE = '{"image": "<base64 PNG or JPEG>"} or {"images": ["<base64>", ...]}, or the raw image with Content-Type: image/png'
MAX_PIXELS = 25_000_000


@dataclass(frozen=True)
class ImageLimits:
    max_image_bytes: int
    max_images_per_request: int

    @property
    def max_body_bytes(self) -> int:
        """The largest valid body: every image base64-encoded (4/3 of its bytes) plus JSON framing."""
        return self.max_images_per_request * (self.max_image_bytes * 4 // 3 + 64) + 1024


def check_image_body_size(size: int, content_type: str, limits: ImageLimits) -> None:
    raw = content_type.startswith("image/")
    limit = limits.max_image_bytes if raw else limits.max_body_bytes
    if size > limit:
        what = "image" if raw else "request body"
        raise RequestError(413, f"the {what} has {size} bytes, more than the limit of {limit}; send a smaller image (the limit is maxImageBytes={limits.max_image_bytes} per image)")


def _decode(data: bytes, where: str, limits: ImageLimits) -> np.ndarray:
    if len(data) > limits.max_image_bytes:
        raise RequestError(413, f"{where} has {len(data)} bytes, more than the limit of {limits.max_image_bytes}; send a smaller image")
    try:
        return decode_image(data, where, max_pixels=MAX_PIXELS)
    except ImageError as exc:
        raise RequestError(400, f"{exc.where} {exc.message}") from exc


def _b64(value: Any, where: str, limits: ImageLimits) -> np.ndarray:
    if not isinstance(value, str):
        raise RequestError(422, f"{where} must be a base64 string, got {type_name(value)}; send {EXAMPLE}")
    text = value.strip()
    if text.startswith("data:"):
        _, _, text = text.partition(",")
    if not text:
        raise RequestError(422, f"{where} is empty; send a base64-encoded image")
    try:
        data = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise RequestError(400, f"{where} is not valid base64 ({exc}); encode the image file's bytes with base64") from exc
    return _decode(data, where, limits)


def parse_image_request(raw: bytes, content_type: str, limits: ImageLimits) -> list[np.ndarray]:
    """The decoded images of a /predict request, in order; raises RequestError for anything else."""
    content_type = content_type.split(";")[0].strip().lower()
    check_image_body_size(len(raw), content_type, limits)
    if content_type.startswith("image/"):
        if not raw:
            raise RequestError(400, "the request body is empty; send the image bytes")
        return [_decode(raw, "the image in the request body", limits)]
    if content_type not in ("application/json", ""):
        raise RequestError(415, f"Content-Type {content_type!r} is not accepted; send application/json or image/* ({EXAMPLE})")
    if not raw.strip():
        raise RequestError(400, f"the request body is empty; send {EXAMPLE}")
    try:
        body = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise RequestError(400, f"the request body is not valid JSON ({exc}); send {EXAMPLE}") from exc
    if not isinstance(body, dict):
        raise RequestError(422, f"the body must be a JSON object, got {type_name(body)}; send {EXAMPLE}")
    unknown = sorted(set(body) - {"image", "images"})
    if unknown:
        raise RequestError(422, f"unknown field(s) {', '.join(unknown)}; the body takes exactly one of image or images")
    if "image" in body and "images" in body:
        raise RequestError(422, "send either image or images, not both")
    if "image" in body:
        return [_b64(body["image"], "image", limits)]
    if "images" not in body:
        raise RequestError(422, f"missing field image (or images); send {EXAMPLE}")
    images = body["images"]
    if not isinstance(images, list):
        raise RequestError(422, f"images must be a list of base64 strings, got {type_name(images)}")
    if not images:
        raise RequestError(422, "images is an empty list; send at least one image")
    if len(images) > limits.max_images_per_request:
        raise RequestError(413, f"images has {len(images)} items, more than the limit of {limits.max_images_per_request}; split them over several requests")
    return [_b64(v, f"images[{i}]", limits) for i, v in enumerate(images)]
