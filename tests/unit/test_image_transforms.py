"""Image preprocessing and augmentation: shapes, normalisation, training-only, deterministic under the seed."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from graft.api.spec import AugmentationSpec, ColorJitterSpec, DatasetSpec, NormalizeSpec
from graft.jobs.tasks.image_transforms import ModelInput, Preprocess, resolve_input

pytestmark = pytest.mark.unit
RGB = ModelInput(32, 3, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
FULL = AugmentationSpec(rotation=20, vertical_flip=0.3, color_jitter=ColorJitterSpec(brightness=0.3, contrast=0.3, saturation=0.3, hue=0.1))


def picture(seed: int = 0) -> np.ndarray:
    return (np.random.default_rng(seed).random((40, 50, 3)) * 255).astype(np.uint8)


def test_eval_view_is_resized_normalised_and_rgb_even_for_grey_input() -> None:
    grey = np.full((28, 28), 255, dtype=np.uint8)
    t = Preprocess(RGB).eval(grey)
    assert t.shape == (3, 32, 32) and t.dtype == torch.float32
    assert torch.allclose(t, torch.ones_like(t))  # (1.0 - 0.5) / 0.5


def test_augmentation_is_deterministic_under_the_seed() -> None:
    a = Preprocess(RGB, FULL, seed=7).train(picture(), epoch=2, index=5)
    b = Preprocess(RGB, FULL, seed=7).train(picture(), epoch=2, index=5)
    assert torch.equal(a, b)


def test_augmentation_differs_across_seeds_epochs_and_rows() -> None:
    base = Preprocess(RGB, FULL, seed=7).train(picture(), epoch=2, index=5)
    assert not torch.equal(base, Preprocess(RGB, FULL, seed=8).train(picture(), epoch=2, index=5))
    assert not torch.equal(base, Preprocess(RGB, FULL, seed=7).train(picture(), epoch=3, index=5))
    assert not torch.equal(base, Preprocess(RGB, FULL, seed=7).train(picture(), epoch=2, index=6))


def test_without_augmentation_training_sees_the_eval_view() -> None:
    p = Preprocess(RGB, None, seed=7)
    assert torch.equal(p.train(picture(), epoch=1, index=0), p.eval(picture()))


def test_evaluation_is_never_augmented() -> None:
    assert torch.equal(Preprocess(RGB, FULL, seed=1).eval(picture()), Preprocess(RGB, None).eval(picture()))


def test_certain_flip_mirrors_the_image() -> None:
    flip = AugmentationSpec(random_resized_crop=None, horizontal_flip=1.0)
    img = np.zeros((32, 32, 3), dtype=np.uint8)
    img[:, :8] = 255
    out = np.asarray(Preprocess(RGB, flip).augmented_image(img, 1, 0))
    assert out[:, -8:].min() == 255 and out[:, :8].max() == 0


def test_spec_normalisation_and_size_override_the_model_defaults() -> None:
    spec = DatasetSpec(source="x", image_size=64, normalize=NormalizeSpec(mean=[0.1], std=[0.2]))
    assert resolve_input(RGB, spec) == ModelInput(64, 3, (0.1, 0.1, 0.1), (0.2, 0.2, 0.2))
