"""Image decoding bounded per image, per request and per replica (issue 21, finding 10): a small
PNG whose header promises many pixels, or a request whose images together do, is refused with 413
before anything is decoded; decoding runs off the event loop, which keeps answering meanwhile."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import struct
import threading
import time
import tracemalloc
import zlib
from concurrent.futures import ThreadPoolExecutor
from functools import cache
from types import SimpleNamespace
from typing import Any

import pytest
from PIL import Image
from starlette.requests import Request

from graft.serving import image_protocol
from graft.serving.app import BatchStats
from graft.serving.image_app import ImageClassifier
from graft.serving.image_protocol import ImageLimits, parse_image_request
from graft.serving.protocol import RequestError

pytestmark = [pytest.mark.unit, pytest.mark.tenancy]

LIMITS = ImageLimits(max_image_bytes=10_000_000, max_images_per_request=64)  # the spec's defaults


def png(width: int, height: int, idat: bytes) -> bytes:
    """An 8-bit RGB PNG of the given header size around the compressed rows `idat`."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


@cache
def blank_png(width: int, height: int) -> bytes:
    """A valid all-black PNG, compressed row by row: a few KiB that decode to width x height x 3 bytes."""
    z = zlib.compressobj(9)
    row = b"\0" * (1 + 3 * width)
    return png(width, height, b"".join(z.compress(row) for _ in range(height)) + z.flush())


@pytest.fixture
def decodes(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The images decoded during the test (by name), counted around the real decoder."""
    seen: list[str] = []
    real = image_protocol.decode_image

    def counting(data: bytes, where: str, **kw: Any) -> Any:
        seen.append(where)
        return real(data, where, **kw)

    monkeypatch.setattr(image_protocol, "decode_image", counting)
    return seen


def refused(raw: bytes, content_type: str) -> tuple[RequestError, int]:
    """The RequestError of parsing, and the peak memory Python allocated meanwhile."""
    tracemalloc.start()
    try:
        with pytest.raises(RequestError) as err:
            parse_image_request(raw, content_type, LIMITS)
        return err.value, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_a_small_png_of_25_megapixels_is_refused_from_its_header(decodes: list[str]) -> None:
    bomb = blank_png(5000, 5000)  # about 75 KB on the wire, 75 MB decoded
    assert len(bomb) < 200_000
    err, peak = refused(bomb, "image/png")
    assert err.status == 413 and "maxImagePixels" in err.message
    assert decodes == [] and peak < 10_000_000


def test_a_header_pillow_calls_a_decompression_bomb_is_refused_with_413(decodes: list[str]) -> None:
    header_only = png(60_000, 60_000, zlib.compress(b"\0" * 1024))  # 3.6 gigapixels promised
    err, _ = refused(header_only, "image/png")
    assert err.status == 413 and decodes == []


def test_too_many_pixels_in_one_request_are_refused_before_any_image_is_decoded(decodes: list[str]) -> None:
    image = base64.b64encode(blank_png(3500, 3500)).decode()  # 12.25 megapixels each, under the per-image limit
    body = json.dumps({"images": [image, image, image]}).encode()  # 36.75 together
    err, peak = refused(body, "application/json")
    assert err.status == 413 and "maxPixelsPerRequest" in err.message
    assert decodes == [] and peak < 20_000_000


def test_images_within_the_limits_are_decoded() -> None:
    [image] = parse_image_request(blank_png(64, 48), "image/png", LIMITS)
    assert image.shape == (48, 64, 3)


class HeldPreprocess:
    """A preprocessing step that holds its decode thread until released (at most 5 s)."""

    def __init__(self) -> None:
        self.started = threading.Event()
        self.release = threading.Event()
        self.held_until_released = False

    def eval(self, image: Any) -> Any:
        self.started.set()
        self.held_until_released = self.release.wait(5)
        return image


def classifier(preprocess: HeldPreprocess) -> Any:
    """The real ImageClassifier handler over a stand-in model (no weights, no Serve)."""
    clf = object.__new__(ImageClassifier.func_or_class)  # type: ignore[attr-defined]
    clf._model = SimpleNamespace(preprocess=preprocess, label_names=["a", "b"])
    clf._executor = ThreadPoolExecutor(max_workers=1)
    clf._decoder = ThreadPoolExecutor(max_workers=2)
    clf._limits = LIMITS
    clf._stats = BatchStats()
    clf._args = SimpleNamespace(model_version=1)

    async def classify(tensor: Any) -> list[float]:  # stands in for the @serve.batch forward
        return [0.9, 0.1]

    clf._classify = classify
    return clf


def png_request(data: bytes) -> Request:
    delivered = False

    async def receive() -> dict[str, Any]:
        nonlocal delivered
        if delivered:
            return {"type": "http.disconnect"}
        delivered = True
        return {"type": "http.request", "body": data, "more_body": False}

    headers = [(b"content-type", b"image/png"), (b"content-length", str(len(data)).encode())]
    return Request({"type": "http", "method": "POST", "path": "/predict", "headers": headers, "query_string": b""}, receive)


def test_the_event_loop_keeps_answering_while_an_image_decodes() -> None:
    buf = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buf, format="PNG")
    preprocess = HeldPreprocess()
    clf = classifier(preprocess)

    async def scenario() -> int:
        request = asyncio.create_task(clf.predict(png_request(buf.getvalue())))
        deadline = time.monotonic() + 10
        while not preprocess.started.is_set():
            assert time.monotonic() < deadline, "the decode never started"
            await asyncio.sleep(0.01)
        tick = time.monotonic()
        await asyncio.sleep(0.01)  # another coroutine's turn, while the decode is held
        assert time.monotonic() - tick < 1.0 and not request.done()
        preprocess.release.set()
        return int((await request).status_code)

    assert asyncio.run(scenario()) == 200
    assert preprocess.held_until_released  # the decode waited for the loop's go, not for its timeout
