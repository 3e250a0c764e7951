"""The image /predict request: raw `image/*` bodies or base64 images in JSON. Pure: no Serve, no torch.

    curl -X POST --data-binary @digit.png -H 'Content-Type: image/png' URL/predict
    curl -X POST -H 'Content-Type: application/json' -d '{"image": "<base64>"}' URL/predict
    ... -d '{"images": ["<base64>", "data:image/png;base64,<base64>"]}'

Every bad request maps to a `RequestError`: 400 (not JSON, not base64, not a decodable image),
413 (too large), 415 (a content type that is neither JSON nor an image), 422 (wrong JSON shape).

Decoding is bounded before it starts: every image's width x height is read from its header
(`image_pixels`, no pixel data decoded) and checked against `maxImagePixels` per image and
`maxPixelsPerRequest` for all the request's images together; only then is any image decoded.
"""

from __future__ import annotations

import base64
import binascii
import io
import json
import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from graft.jobs.tasks.image_decode import ImageError, decode_image
from graft.serving.protocol import RequestError, type_name

if TYPE_CHECKING:
    import numpy as np

EXAMPLE = '{"image": "<base64 PNG or JPEG>"} or {"images": ["<base64>", ...]}, or the raw image with Content-Type: image/png'


@dataclass(frozen=True)
class ImageLimits:
    max_image_bytes: int
    max_images_per_request: int
    max_image_pixels: int = 16_777_216
    max_pixels_per_request: int = 33_554_432

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


@dataclass(frozen=True)
class ImagePayload:
    """One image of a request, still encoded; `where` names it in errors (e.g. `images[2]`)."""

    where: str
    data: bytes


def image_pixels(data: bytes, where: str) -> int:
    """width x height from the image's header, without decoding its pixels; RequestError 400 for
    bytes Pillow cannot identify, 413 for a header Pillow itself refuses as a decompression bomb."""
    from PIL import Image, UnidentifiedImageError

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # our own limit decides
            with Image.open(io.BytesIO(data)) as img:
                width, height = img.size
    except Image.DecompressionBombError as exc:
        raise RequestError(413, f"{where} is too large to decode safely ({exc}); downscale it") from exc
    except UnidentifiedImageError as exc:
        raise RequestError(400, f"{where} is not an image Pillow can read (unknown or corrupt format); use PNG, JPEG, BMP, GIF, TIFF or WebP") from exc
    except (OSError, SyntaxError, ValueError) as exc:
        raise RequestError(400, f"{where} cannot be read ({exc}); the file is truncated or corrupt") from exc
    return int(width) * int(height)


def check_pixels(payloads: list[ImagePayload], limits: ImageLimits) -> None:
    """RequestError 413 when one image has more than maxImagePixels, or all of them together more
    than maxPixelsPerRequest, as their headers say (nothing is decoded)."""
    total = 0
    for payload in payloads:
        pixels = image_pixels(payload.data, payload.where)
        if pixels > limits.max_image_pixels:
            raise RequestError(413, f"{payload.where} has {pixels} pixels, more than the limit of maxImagePixels={limits.max_image_pixels}; downscale it")
        total += pixels
        if total > limits.max_pixels_per_request:
            raise RequestError(
                413,
                f"the request's images have at least {total} pixels together, more than the limit of "
                f"maxPixelsPerRequest={limits.max_pixels_per_request}; send fewer or smaller images per request",
            )


def decode_payload(payload: ImagePayload, limits: ImageLimits) -> np.ndarray:
    """The decoded image (call after `check_pixels`; the per-image limit is enforced again while decoding)."""
    try:
        return decode_image(payload.data, payload.where, max_pixels=limits.max_image_pixels)
    except ImageError as exc:
        raise RequestError(400, f"{exc.where} {exc.message}") from exc


def _payload(data: bytes, where: str, limits: ImageLimits) -> ImagePayload:
    if len(data) > limits.max_image_bytes:
        raise RequestError(413, f"{where} has {len(data)} bytes, more than the limit of {limits.max_image_bytes}; send a smaller image")
    return ImagePayload(where, data)


def _b64(value: Any, where: str, limits: ImageLimits) -> ImagePayload:
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
    return _payload(data, where, limits)


def parse_image_request(raw: bytes, content_type: str, limits: ImageLimits) -> list[np.ndarray]:
    """The decoded images of a /predict request, in order, decoded only once the pixel limits of
    every image and of the whole request hold; raises RequestError for anything else."""
    payloads = image_payloads(raw, content_type, limits)
    check_pixels(payloads, limits)
    return [decode_payload(p, limits) for p in payloads]


def image_payloads(raw: bytes, content_type: str, limits: ImageLimits) -> list[ImagePayload]:
    """The still-encoded images of a /predict request, in order; RequestError for a bad body."""
    content_type = content_type.split(";")[0].strip().lower()
    check_image_body_size(len(raw), content_type, limits)
    if content_type.startswith("image/"):
        if not raw:
            raise RequestError(400, "the request body is empty; send the image bytes")
        return [_payload(raw, "the image in the request body", limits)]
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
