"""What a trial checkpoint saves of the engine and the RNGs (graft.jobs.engine.TorchEngine,
graft.jobs.checkpoint), and that a worker restored from it trains on exactly as if it had never
stopped. A small real torch module on the CPU in fp32; no Ray."""

from __future__ import annotations

import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from graft.api.spec import Precision, TrainingSpec
from graft.jobs.checkpoint import Progress, load_rng, read_meta, rng_file, save_rng, write_meta
from graft.jobs.engine import STATE_FILE, TorchEngine

pytestmark = pytest.mark.unit

TOTAL_STEPS = 8
STOP_AFTER = 4
CPU = torch.device("cpu")
# Warmup over the first 2 steps, then decay: the schedule's position matters after a restore.
TRAINING = TrainingSpec(epochs=2, learning_rate=0.05, warmup_ratio=0.25, weight_decay=0.1, precision=Precision.FP32)
X = torch.randn(64, 6, generator=torch.Generator().manual_seed(0))
Y = (X[:, 0] + X[:, 1] > 0).long()


def _module(seed: int = 0) -> torch.nn.Sequential:
    torch.manual_seed(seed)
    return torch.nn.Sequential(
        torch.nn.Linear(6, 16), torch.nn.LayerNorm(16), torch.nn.ReLU(), torch.nn.Dropout(0.3), torch.nn.Linear(16, 2))


def _engine(module: torch.nn.Module, precision: Any = "fp32", training: TrainingSpec = TRAINING) -> TorchEngine:
    return TorchEngine(module, training, precision, CPU, TOTAL_STEPS, ddp=False)


def _loss(model: Any) -> torch.Tensor:
    """A batch drawn with all three RNGs (Python, numpy, torch) and a forward pass through dropout:
    each of them has to be restored for the continued run to match."""
    start = random.randrange(0, 32)
    rows = np.random.permutation(32)[:8] + start
    noise = torch.randn(8, 6) * 0.01
    idx = torch.from_numpy(rows)
    return torch.nn.functional.cross_entropy(model(X[idx] + noise), Y[idx])


def _seed_all(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _steps(engine: TorchEngine, n: int, gas: int = 1) -> list[float]:
    engine.train()
    losses = []
    for i in range(n * gas):
        losses.append(float(engine.micro_step(_loss, boundary=(i + 1) % gas == 0)))
    return losses


def _params(module: Any) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def _checkpoint(engine: TorchEngine, out: Path) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    engine.save(out, rank=0)
    save_rng(out, rank=0)
    return out


def _restored(src: Path, module: Callable[[], torch.nn.Module] = lambda: _module(seed=123)) -> TorchEngine:
    """A new worker: a freshly built model (other initial weights), other RNG states, then the checkpoint."""
    _seed_all(999)
    engine = _engine(module())
    engine.load(src)
    assert load_rng(src, rank=0)
    return engine


@pytest.fixture
def uninterrupted() -> tuple[list[float], dict[str, torch.Tensor]]:
    _seed_all(7)
    engine = _engine(_module())
    losses = _steps(engine, TOTAL_STEPS)
    return losses, _params(engine.module)


def _stopped_run(tmp_path: Path) -> tuple[list[float], Path]:
    _seed_all(7)
    engine = _engine(_module())
    losses = _steps(engine, STOP_AFTER)
    return losses, _checkpoint(engine, tmp_path / "ckpt")


def test_a_restored_engine_continues_with_the_same_losses_and_weights_as_an_uninterrupted_run(
        tmp_path: Path, uninterrupted: tuple[list[float], dict[str, torch.Tensor]]) -> None:
    expected_losses, expected = uninterrupted
    before, ckpt = _stopped_run(tmp_path)
    engine = _restored(ckpt)
    after = _steps(engine, TOTAL_STEPS - STOP_AFTER)
    assert before + after == expected_losses
    got = _params(engine.module)
    assert all(torch.equal(got[k], expected[k]) for k in expected), "weights differ from the uninterrupted run"


def test_a_restore_without_the_rng_state_diverges(tmp_path: Path, uninterrupted: tuple[list[float], dict[str, torch.Tensor]]) -> None:
    """The control for the test above: this loss depends on the RNGs, so their restore is what makes it match."""
    expected_losses, _ = uninterrupted
    _, ckpt = _stopped_run(tmp_path)
    (ckpt / rng_file(0)).unlink()
    _seed_all(999)
    engine = _engine(_module(seed=123))
    engine.load(ckpt)
    assert not load_rng(ckpt, rank=0)
    assert _steps(engine, TOTAL_STEPS - STOP_AFTER) != expected_losses[STOP_AFTER:]


def test_the_learning_rate_schedule_continues_where_it_stopped(tmp_path: Path) -> None:
    _seed_all(7)
    engine = _engine(_module())
    _steps(engine, STOP_AFTER)
    lrs = engine.scheduler.get_last_lr()
    restored = _restored(_checkpoint(engine, tmp_path / "ckpt"))
    assert restored.scheduler.last_epoch == STOP_AFTER
    assert restored.scheduler.get_last_lr() == lrs
    assert [g["lr"] for g in restored.optimizer.param_groups] == lrs


def test_the_optimizer_moments_and_step_counts_are_restored(tmp_path: Path) -> None:
    _seed_all(7)
    engine = _engine(_module())
    _steps(engine, STOP_AFTER)
    restored = _restored(_checkpoint(engine, tmp_path / "ckpt"))
    saved, loaded = engine.optimizer.state_dict()["state"], restored.optimizer.state_dict()["state"]
    assert saved.keys() == loaded.keys() and saved
    for key, moments in saved.items():
        assert float(loaded[key]["step"]) == float(moments["step"]) == STOP_AFTER
        assert torch.equal(loaded[key]["exp_avg"], moments["exp_avg"])
        assert torch.equal(loaded[key]["exp_avg_sq"], moments["exp_avg_sq"])


def test_a_gradient_accumulation_run_resumes_at_an_optimizer_step_boundary(tmp_path: Path) -> None:
    training = TRAINING.model_copy(update={"gradient_accumulation_steps": 2})
    _seed_all(7)
    whole = TorchEngine(_module(), training, "fp32", CPU, TOTAL_STEPS, ddp=False)
    expected = _steps(whole, TOTAL_STEPS, gas=2)

    _seed_all(7)
    first = TorchEngine(_module(), training, "fp32", CPU, TOTAL_STEPS, ddp=False)
    before = _steps(first, STOP_AFTER, gas=2)
    ckpt = _checkpoint(first, tmp_path / "ckpt")
    _seed_all(999)
    second = TorchEngine(_module(seed=123), training, "fp32", CPU, TOTAL_STEPS, ddp=False)
    second.load(ckpt)
    load_rng(ckpt, rank=0)
    assert before + _steps(second, TOTAL_STEPS - STOP_AFTER, gas=2) == expected
    assert all(torch.equal(a, b) for a, b in zip(_params(second.module).values(), _params(whole.module).values(), strict=True))


def test_a_frozen_base_checkpoint_holds_only_the_trainable_weights_and_restores_them(tmp_path: Path) -> None:
    def frozen_base(seed: int) -> torch.nn.Sequential:
        module = _module(seed)
        for p in module[0].parameters():
            p.requires_grad = False
        return module

    _seed_all(7)
    engine = _engine(frozen_base(0))
    _steps(engine, STOP_AFTER)
    _checkpoint(engine, tmp_path / "ckpt")
    saved = torch.load(tmp_path / "ckpt" / STATE_FILE, weights_only=True)["model"]
    assert not any(k.startswith("0.") for k in saved)  # the frozen base is not copied into every checkpoint
    assert {"1.weight", "4.weight", "4.bias"} <= saved.keys()

    restored = _restored(tmp_path / "ckpt", module=lambda: frozen_base(0))  # the base comes from the model source again
    expected = _params(engine.module)
    assert all(torch.equal(v, expected[k]) for k, v in _params(restored.module).items())


def test_loading_a_checkpoint_of_another_model_fails_loudly(tmp_path: Path) -> None:
    _seed_all(7)
    engine = _engine(_module())
    _checkpoint(engine, tmp_path / "ckpt")
    other = _engine(torch.nn.Sequential(torch.nn.Linear(6, 16), torch.nn.ReLU(), torch.nn.Linear(16, 2)))  # other names
    with pytest.raises(RuntimeError, match="does not match the model"):
        other.load(tmp_path / "ckpt")


def test_only_rank_zero_writes_the_engine_state(tmp_path: Path) -> None:
    engine = _engine(_module())
    engine.save(tmp_path, rank=1)
    assert not (tmp_path / STATE_FILE).exists()


def test_the_fp16_loss_scale_is_saved_and_restored(tmp_path: Path) -> None:
    """The GradScaler's state only: no fp16 arithmetic runs on the CPU here."""
    engine = _engine(_module(), precision="fp16")
    assert engine.scaler is not None
    engine.scaler.scale(torch.ones(1))  # initialises the scale
    engine.scaler.update(new_scale=512.0)
    engine.save(tmp_path, rank=0)
    restored = _engine(_module(), precision="fp16")
    restored.load(tmp_path)
    assert restored.scaler is not None and restored.scaler.get_scale() == 512.0


def test_each_rank_restores_its_own_rng_state(tmp_path: Path) -> None:
    _seed_all(1)
    save_rng(tmp_path, rank=0)
    expected0 = (random.random(), float(np.random.rand()), float(torch.rand(1)))
    _seed_all(2)
    save_rng(tmp_path, rank=1)
    expected1 = (random.random(), float(np.random.rand()), float(torch.rand(1)))

    assert load_rng(tmp_path, rank=0)
    assert (random.random(), float(np.random.rand()), float(torch.rand(1))) == expected0
    assert load_rng(tmp_path, rank=1)
    assert (random.random(), float(np.random.rand()), float(torch.rand(1))) == expected1


def test_a_rank_without_rng_state_in_the_checkpoint_keeps_its_own(tmp_path: Path) -> None:
    save_rng(tmp_path, rank=0)
    _seed_all(5)
    assert load_rng(tmp_path, rank=3) is False  # a larger world size than the checkpoint's
    _seed_all(5)
    state = torch.get_rng_state()
    load_rng(tmp_path, rank=3)
    assert torch.equal(torch.get_rng_state(), state)


def test_the_checkpoints_progress_round_trips(tmp_path: Path) -> None:
    progress = Progress(epoch=3, global_step=120, best=0.875, stale=1, restarts=2)
    write_meta(tmp_path, {"trial_id": "t1", "epoch": 3, "backend": "single"}, progress)
    meta, back = read_meta(tmp_path)
    assert back == progress
    assert meta["trial_id"] == "t1" and meta["backend"] == "single"
