"""Hostile tenant: a pickle planted in a trial checkpoint (the tenant can write its storage) is
refused when a restarted worker reads the checkpoint back, and its code never runs.

The payload's `__reduce__` writes a marker file when unpickled; every test asserts the marker is absent."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest
import torch

from graft.api.spec import Precision, TrainingSpec
from graft.jobs.checkpoint import load_rng, rng_file, save_rng
from graft.jobs.engine import STATE_FILE, TorchEngine

pytestmark = [pytest.mark.unit, pytest.mark.tenancy]

TRAINING = TrainingSpec(epochs=1, learning_rate=0.05, precision=Precision.FP32)


class Payload:
    """Runs `open(marker, "w")` when unpickled."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self) -> tuple[object, tuple[str, str]]:
        return open, (self.marker, "w")


def _engine() -> TorchEngine:
    torch.manual_seed(0)
    return TorchEngine(torch.nn.Linear(4, 2), TRAINING, "fp32", torch.device("cpu"), total_steps=4, ddp=False)


def _plant(path: Path, marker: Path) -> None:
    torch.save({"model": Payload(marker), "optimizer": {}, "scheduler": {}}, path)


def test_the_planted_payload_runs_when_unpickled(tmp_path: Path) -> None:
    """The control: the planted file really is live code under a full unpickle."""
    marker = tmp_path / "pwned"
    _plant(tmp_path / STATE_FILE, marker)
    torch.load(tmp_path / STATE_FILE, weights_only=False)
    assert marker.exists()


def test_a_planted_engine_state_is_refused_and_never_runs(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    _plant(tmp_path / STATE_FILE, marker)
    with pytest.raises(pickle.UnpicklingError):
        _engine().load(tmp_path)
    assert not marker.exists()


def test_a_planted_rng_state_is_refused_and_never_runs(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    torch.save({"python": Payload(marker)}, tmp_path / rng_file(0))
    with pytest.raises(pickle.UnpicklingError):
        load_rng(tmp_path, rank=0)
    assert not marker.exists()


def test_the_saved_rng_state_loads_as_tensors_and_primitives_only(tmp_path: Path) -> None:
    save_rng(tmp_path, rank=0)
    torch.load(tmp_path / rng_file(0), weights_only=True)  # raises on any other object
