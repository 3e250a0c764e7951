"""Image /predict bodies: raw image/* and base64 JSON accepted; clear 4xx for everything else."""

from __future__ import annotations

import base64
import io
import json

import numpy as np
import pytest
from PIL import Image

from graft.serving.image_protocol import ImageLimits, parse_image_request
from graft.serving.protocol import RequestError

pytestmark = pytest.mark.unit
LIMITS = ImageLimits(max_image_bytes=4096, max_images_per_request=3)


def png(value: int = 128) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.full((8, 8), value, dtype=np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def noisy_png() -> bytes:
    buf = io.BytesIO()
    Image.fromarray((np.random.default_rng(0).random((24, 24)) * 255).astype(np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def status_of(raw: bytes, content_type: str) -> tuple[int, str]:
    with pytest.raises(RequestError) as info:
        parse_image_request(raw, content_type, LIMITS)
    return info.value.status, info.value.message


def test_raw_image_body_decodes() -> None:
    [image] = parse_image_request(png(7), "image/png", LIMITS)
    assert image.shape == (8, 8) and int(image[0, 0]) == 7


def test_json_image_and_images_decode_in_order_with_data_urls() -> None:
    body = json.dumps({"images": [b64(png(1)), "data:image/png;base64," + b64(png(2))]}).encode()
    images = parse_image_request(body, "application/json; charset=utf-8", LIMITS)
    assert [int(i[0, 0]) for i in images] == [1, 2]
    assert len(parse_image_request(json.dumps({"image": b64(png())}).encode(), "application/json", LIMITS)) == 1


@pytest.mark.parametrize(
    ("raw", "content_type", "status", "fragment"),
    [
        (b"GIF89a-not-really", "image/gif", 400, "not an image"),
        (noisy_png()[:300], "image/png", 400, "truncated or corrupt"),
        (b"", "image/png", 400, "empty"),
        (json.dumps({"image": "%%%not base64%%%"}).encode(), "application/json", 400, "not valid base64"),
        (json.dumps({"image": b64(b"hello")}).encode(), "application/json", 400, "image is not an image"),
        (b"{not json", "application/json", 400, "not valid JSON"),
        (json.dumps({"text": "a cat"}).encode(), "application/json", 422, "unknown field(s) text"),
        (json.dumps({"image": 3}).encode(), "application/json", 422, "base64 string"),
        (json.dumps({"images": [b64(png())] * 4}).encode(), "application/json", 413, "more than the limit of 3"),
        (b"x" * 5000, "image/png", 413, "more than the limit of 4096"),
        (b"hello", "text/plain", 415, "text/plain"),
    ],
    ids=["undecodable", "truncated", "empty", "bad-base64", "base64-not-image", "not-json", "text-body", "not-string", "too-many", "too-big", "wrong-type"],
)
def test_bad_requests_get_a_clear_4xx(raw: bytes, content_type: str, status: int, fragment: str) -> None:
    got_status, message = status_of(raw, content_type)
    assert got_status == status
    assert fragment in message
