"""Decode one image (file or bytes) into a uint8 array, refusing bad images with a message naming them.

Shared by training (dataset loading) and serving (request bodies): keep it free of torch/ray.
Accepted: any format Pillow reads, in 1-bit, 8-bit grey, palette, RGB(A), LA, CMYK or YCbCr mode.
Refused: empty files, truncated files, undecodable bytes, zero-sized images, and modes whose
pixels are not 8-bit colour (32-bit integer `I`, float `F`, 16-bit `I;16`...), which would need a
scaling Graft cannot guess.
"""

from __future__ import annotations

import io
import warnings
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np

GREY_MODES = {"1", "L", "LA"}
COLOUR_MODES = {"RGB", "RGBA", "P", "PA", "CMYK", "YCbCr", "RGBX", "LAB", "HSV"}
DEFAULT_MAX_PIXELS = 40_000_000  # about 6300 x 6300; Pillow's own bomb limit is 89M


class ImageError(ValueError):
    """An image that cannot be used; `where` names the file, row or request part it came from."""

    def __init__(self, where: str, message: str) -> None:
        self.where = where
        self.message = message
        super().__init__(f"{where}: {message}")


def decode_image(data: bytes, where: str, *, max_pixels: int = DEFAULT_MAX_PIXELS, max_side: int | None = None) -> np.ndarray:
    """An H x W (grey) or H x W x 3 (colour) uint8 array of the image in `data`.

    `max_side`: shrink (keeping the aspect ratio) so that the shorter side is at most this.
    """
    import numpy as np
    from PIL import Image, UnidentifiedImageError

    if len(data) == 0:
        raise ImageError(where, "is empty (0 bytes); remove it or replace it with a real image")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
            width, height = img.size
            if width * height > max_pixels:
                raise ImageError(where, f"is {width}x{height} pixels, more than the limit of {max_pixels}; downscale it first")
            img.load()
    except UnidentifiedImageError as exc:
        raise ImageError(where, "is not an image Pillow can read (unknown or corrupt format); use PNG, JPEG, BMP, GIF, TIFF or WebP") from exc
    except Image.DecompressionBombWarning as exc:
        raise ImageError(where, f"is too large to decode safely: {exc}") from exc
    except (OSError, SyntaxError, ValueError) as exc:  # Pillow's "image file is truncated", broken chunks
        raise ImageError(where, f"cannot be decoded ({exc}); the file is truncated or corrupt: re-export it") from exc
    if width == 0 or height == 0:
        raise ImageError(where, f"has zero size ({width}x{height}); remove it")
    mode = img.mode
    if mode in GREY_MODES:
        img = img.convert("L")
    elif mode in COLOUR_MODES:
        img = img.convert("RGB")
    else:
        raise ImageError(
            where,
            f"has mode {mode!r} (not 8-bit grey or colour pixels); convert it to 8-bit grey (L) or RGB, "
            "e.g. PIL Image.convert('L') after scaling its values to 0..255",
        )
    if max_side is not None and min(img.size) > max_side:
        scale = max_side / min(img.size)
        img = img.resize((max(1, round(img.width * scale)), max(1, round(img.height * scale))), Image.Resampling.BILINEAR)
    return np.asarray(img, dtype=np.uint8).copy()


def read_image_file(path: str, *, max_side: int | None = None) -> np.ndarray:
    """`decode_image` of a file, naming the file in every error."""
    try:
        with open(path, "rb") as fh:
            data = fh.read()
    except OSError as exc:
        raise ImageError(path, f"cannot be read: {exc.strerror or exc}") from exc
    return decode_image(data, path, max_side=max_side)
