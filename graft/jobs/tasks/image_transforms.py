"""Image preprocessing (resize, channels, normalisation) and training-time augmentation.

`Preprocess` turns a decoded uint8 image into the model's input tensor (C x S x S, normalised).
Evaluation and serving use `Preprocess.eval`: resize the shorter side to S, centre-crop S x S.
Training uses `Preprocess.train(image, epoch, index)`: the `dataset.augmentation` ops in a fixed
order (random resized crop, flips, rotation, colour jitter), each drawn from a generator seeded by
(seed, epoch, index), so a run is reproducible whatever the worker count or data order.
Implemented on Pillow and NumPy (no torchvision needed).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from graft.api.spec import AugmentationSpec, DatasetSpec

if TYPE_CHECKING:
    import torch
    from PIL import Image


@dataclass(frozen=True)
class ModelInput:
    """What a model expects: square size, channels, per-channel mean and std (pixels scaled to 0..1)."""

    image_size: int
    channels: int
    mean: tuple[float, ...]
    std: tuple[float, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"image_size": self.image_size, "channels": self.channels, "mean": list(self.mean), "std": list(self.std)}

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> ModelInput:
        return cls(int(raw["image_size"]), int(raw["channels"]), tuple(raw["mean"]), tuple(raw["std"]))


def resolve_input(model_default: ModelInput, spec: DatasetSpec) -> ModelInput:
    """The model's input settings with the spec's imageSize and normalize applied."""
    size = spec.image_size or model_default.image_size
    mean, std = model_default.mean, model_default.std
    if spec.normalize is not None:
        n = model_default.channels
        mean = tuple(spec.normalize.mean) * (n if len(spec.normalize.mean) == 1 else 1)
        std = tuple(spec.normalize.std) * (n if len(spec.normalize.std) == 1 else 1)
        if len(mean) != n:
            from graft.jobs.data import DataError

            raise DataError("spec.dataset.normalize", f"the model takes {n} channel(s); give 1 or {n} mean/std values, not {len(spec.normalize.mean)}")
    return ModelInput(size, model_default.channels, mean, std)


def _to_pil(image: np.ndarray, channels: int) -> Image.Image:
    from PIL import Image

    img = Image.fromarray(image)
    return img.convert("RGB" if channels == 3 else "L")


def _resize_center(img: Image.Image, size: int) -> Image.Image:
    from PIL import Image

    w, h = img.size
    scale = size / min(w, h)
    nw, nh = max(size, round(w * scale)), max(size, round(h * scale))
    img = img.resize((nw, nh), Image.Resampling.BILINEAR)
    left, top = (nw - size) // 2, (nh - size) // 2
    return img.crop((left, top, left + size, top + size))


def _random_resized_crop(img: Image.Image, size: int, scale: list[float], ratio: list[float], rng: np.random.Generator) -> Image.Image:
    """torchvision's RandomResizedCrop: 10 tries at a random area and aspect ratio, else a centre crop."""
    from PIL import Image

    w, h = img.size
    area = w * h
    log_lo, log_hi = math.log(ratio[0]), math.log(ratio[1])
    for _ in range(10):
        target = area * rng.uniform(scale[0], scale[1])
        aspect = math.exp(rng.uniform(log_lo, log_hi))
        cw, ch = round(math.sqrt(target * aspect)), round(math.sqrt(target / aspect))
        if 0 < cw <= w and 0 < ch <= h:
            left, top = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
            return img.resize((size, size), Image.Resampling.BILINEAR, box=(left, top, left + cw, top + ch))
    return _resize_center(img, size)


def _jitter(img: Image.Image, spec: AugmentationSpec, rng: np.random.Generator) -> Image.Image:
    from PIL import ImageEnhance

    cj = spec.color_jitter
    assert cj is not None
    if cj.brightness:
        img = ImageEnhance.Brightness(img).enhance(rng.uniform(1 - cj.brightness, 1 + cj.brightness))
    if cj.contrast:
        img = ImageEnhance.Contrast(img).enhance(rng.uniform(1 - cj.contrast, 1 + cj.contrast))
    if cj.saturation and img.mode == "RGB":
        img = ImageEnhance.Color(img).enhance(rng.uniform(1 - cj.saturation, 1 + cj.saturation))
    if cj.hue and img.mode == "RGB":
        from PIL import Image

        shift = int(round(rng.uniform(-cj.hue, cj.hue) * 255))
        hsv = np.asarray(img.convert("HSV")).copy()
        hsv[..., 0] = (hsv[..., 0].astype(np.int16) + shift) % 256
        img = Image.fromarray(hsv, mode="HSV").convert("RGB")
    return img


@dataclass(frozen=True)
class Preprocess:
    model_input: ModelInput
    augmentation: AugmentationSpec | None = None
    seed: int = 0

    def _tensor(self, img: Image.Image) -> torch.Tensor:
        import torch

        arr = np.asarray(img, dtype=np.float32) / 255.0
        if arr.ndim == 2:
            arr = arr[:, :, None]
        t = torch.from_numpy(arr.transpose(2, 0, 1).copy())
        mean = torch.tensor(self.model_input.mean, dtype=torch.float32).view(-1, 1, 1)
        std = torch.tensor(self.model_input.std, dtype=torch.float32).view(-1, 1, 1)
        return (t - mean) / std

    def eval(self, image: np.ndarray) -> torch.Tensor:
        """The deterministic view: shorter side to the input size, centre crop, normalise."""
        return self._tensor(_resize_center(_to_pil(image, self.model_input.channels), self.model_input.image_size))

    def augmented_image(self, image: np.ndarray, epoch: int, index: int) -> Image.Image:
        """The augmented training image (before normalisation), for tests and for looking at it."""
        from PIL import Image

        aug = self.augmentation
        size = self.model_input.image_size
        img = _to_pil(image, self.model_input.channels)
        if aug is None:
            return _resize_center(img, size)
        rng = np.random.default_rng([self.seed & 0xFFFFFFFF, epoch, index])
        crop = aug.random_resized_crop
        img = _random_resized_crop(img, size, crop.scale, crop.ratio, rng) if crop is not None else _resize_center(img, size)
        if aug.horizontal_flip and rng.random() < aug.horizontal_flip:
            img = img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        if aug.vertical_flip and rng.random() < aug.vertical_flip:
            img = img.transpose(Image.Transpose.FLIP_TOP_BOTTOM)
        if aug.rotation:
            img = img.rotate(rng.uniform(-aug.rotation, aug.rotation), resample=Image.Resampling.BILINEAR)
        if aug.color_jitter is not None:
            img = _jitter(img, aug, rng)
        return img

    def train(self, image: np.ndarray, epoch: int, index: int) -> torch.Tensor:
        """The training view of row `index` in `epoch`: augmented when the spec asks for it."""
        return self._tensor(self.augmented_image(image, epoch, index))
