"""The spec -> DeepSpeed config translation and the precision rules."""

from __future__ import annotations

import pytest

from graft.api.spec import TrainingSpec
from graft.jobs.deepspeed_config import PrecisionError, adamw_params, deepspeed_config, lr_multiplier, resolve_precision

pytestmark = pytest.mark.unit


def training(**kw: object) -> TrainingSpec:
    return TrainingSpec.model_validate(kw)


def test_batch_sizes_and_accumulation() -> None:
    cfg = deepspeed_config(training(batchSize=8, gradientAccumulationSteps=4), world_size=2, precision="bf16")
    assert cfg["train_micro_batch_size_per_gpu"] == 8
    assert cfg["gradient_accumulation_steps"] == 4
    assert cfg["train_batch_size"] == 64


def test_zero_stage_and_precision_flags() -> None:
    cfg = deepspeed_config(training(deepspeed={"zeroStage": 2}), world_size=1, precision="bf16")
    assert cfg["zero_optimization"]["stage"] == 2
    assert cfg["bf16"] == {"enabled": True} and cfg["fp16"]["enabled"] is False


def test_fp32_enables_neither_half_precision() -> None:
    cfg = deepspeed_config(training(), world_size=1, precision="fp32")
    assert not cfg["bf16"]["enabled"] and not cfg["fp16"]["enabled"]


def test_zero3_with_offload_sets_both_offloads_and_16bit_gather() -> None:
    cfg = deepspeed_config(
        training(deepspeed={"zeroStage": 3, "offloadOptimizer": True, "offloadParameters": True}), world_size=2, precision="bf16"
    )
    zero = cfg["zero_optimization"]
    assert zero["offload_optimizer"] == {"device": "cpu", "pin_memory": False}
    assert zero["offload_param"] == {"device": "cpu", "pin_memory": False}
    assert zero["stage3_gather_16bit_weights_on_model_save"] is True


def test_disabled_deepspeed_means_plain_data_parallel() -> None:
    cfg = deepspeed_config(training(deepspeed={"enabled": False, "zeroStage": 2}), world_size=2, precision="fp32")
    assert cfg["zero_optimization"] == {"stage": 0}


def test_client_optimizer_by_default_needs_no_op_build() -> None:
    cfg = deepspeed_config(training(), world_size=1, precision="bf16")
    assert "optimizer" not in cfg
    assert cfg["zero_allow_untested_optimizer"] is True and cfg["zero_force_ds_cpu_optimizer"] is False


def test_deepspeed_optimizer_section_carries_adamw_settings() -> None:
    cfg = deepspeed_config(training(learningRate=2e-5, weightDecay=0.1), world_size=1, precision="bf16", ds_optimizer=True)
    assert cfg["optimizer"] == {"type": "AdamW", "params": {"lr": 2e-5, "weight_decay": 0.1, "betas": [0.9, 0.999], "eps": 1e-8}}
    assert adamw_params(training(learningRate=2e-5, weightDecay=0.1))["lr"] == 2e-5


@pytest.mark.parametrize(
    ("requested", "gpu", "gpu_bf16", "cpu_bf16", "expected"),
    [
        ("auto", False, False, True, "bf16"),
        ("auto", False, False, False, "fp32"),
        ("auto", True, True, False, "bf16"),
        ("auto", True, False, False, "fp16"),
        ("bf16", False, False, False, "bf16"),
        ("fp32", True, True, True, "fp32"),
        ("fp16", True, False, False, "fp16"),
    ],
)
def test_precision_resolution(requested: str, gpu: bool, gpu_bf16: bool, cpu_bf16: bool, expected: str) -> None:
    assert resolve_precision(requested, gpu=gpu, gpu_bf16=gpu_bf16, cpu_bf16=cpu_bf16) == expected


def test_fp16_without_gpu_is_refused_not_changed() -> None:
    with pytest.raises(PrecisionError, match="fp16 needs a GPU"):
        resolve_precision("fp16", gpu=False, cpu_bf16=True)


def test_lr_schedule_warms_up_then_decays_to_zero() -> None:
    values = [lr_multiplier(s, warmup=2, total=6) for s in range(6)]
    assert values[0] == 0.5 and values[1] == 1.0
    assert values[2] == 1.0 and values[-1] == pytest.approx(0.25)
    assert lr_multiplier(6, warmup=2, total=6) == 0.0


def test_lr_schedule_without_warmup_starts_at_full_rate() -> None:
    assert lr_multiplier(0, warmup=0, total=4) == 1.0
