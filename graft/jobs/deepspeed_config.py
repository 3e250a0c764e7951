"""Translate a TrainingSpec into a DeepSpeed config dict (pure: no torch, no DeepSpeed import).

Optimizer: by default the training loop passes `torch.optim.AdamW` to `deepspeed.initialize` as a
client optimizer (built from `adamw_params`), so no DeepSpeed C++ op (FusedAdam, DeepSpeedCPUAdam)
has to be compiled on CPU machines. `ds_optimizer=True` puts the same AdamW settings into the
config instead, letting DeepSpeed pick its fused/CPU-Adam kernels (they are compiled on first use;
point TORCH_EXTENSIONS_DIR at a persistent cache).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from graft.api.spec import TrainingSpec

ResolvedPrecision = Literal["bf16", "fp16", "fp32"]

ADAMW_BETAS = (0.9, 0.999)
ADAMW_EPS = 1e-8
GRADIENT_CLIPPING = 1.0


class PrecisionError(ValueError):
    """The requested precision cannot run on this hardware."""


def cpu_flags(cpuinfo: str = "/proc/cpuinfo") -> set[str]:
    """The CPU feature flags of this machine (empty where /proc/cpuinfo does not exist)."""
    try:
        text = Path(cpuinfo).read_text()
    except OSError:
        return set()
    for line in text.splitlines():
        if line.startswith(("flags", "Features")):
            return set(line.split(":", 1)[1].split())
    return set()


def cpu_has_native_bf16(flags: set[str] | None = None) -> bool:
    """bf16 matrix instructions (AMX or AVX-512 BF16): without them CPU bf16 is emulated and slow."""
    found = cpu_flags() if flags is None else flags
    return bool(found & {"amx_bf16", "avx512_bf16"})


def cpu_bf16_is_fast(flags: set[str] | None = None) -> bool:
    """Whether `precision: auto` trains in bf16 on this CPU: only with AMX tiles (oneDNN's bf16
    matmuls are then faster than fp32); with AVX-512 BF16 alone bf16 is native but not clearly
    faster, and autocast adds casts, so auto keeps fp32 there."""
    found = cpu_flags() if flags is None else flags
    return "amx_bf16" in found


def resolve_precision(requested: str, *, gpu: bool, gpu_bf16: bool = False, cpu_bf16: bool = False) -> ResolvedPrecision:
    """The precision to train in.

    `auto`: what is fast: bf16 on GPUs that support it, fp16 on GPUs without bf16; on CPUs bf16
    only where `cpu_bf16` (callers pass `cpu_bf16_is_fast()`: AMX), otherwise fp32. An explicit precision is never changed: fp16 without a GPU
    is an error (DeepSpeed refuses fp16 on CPUs), bf16 on a CPU without native bf16 runs emulated.
    """
    if requested == "auto":
        if gpu:
            return "bf16" if gpu_bf16 else "fp16"
        return "bf16" if cpu_bf16 else "fp32"
    if requested == "fp16" and not gpu:
        raise PrecisionError(
            "spec.training.precision: fp16 needs a GPU (DeepSpeed does not support fp16 on CPUs); "
            "use bf16, fp32 or auto, or request GPUs with spec.resources.gpusPerWorker"
        )
    if requested not in ("bf16", "fp16", "fp32"):
        raise PrecisionError(f"spec.training.precision: unknown precision {requested!r}")
    return requested  # type: ignore[return-value]


def adamw_params(training: TrainingSpec) -> dict[str, Any]:
    """AdamW hyperparameters shared by the client optimizer and the DeepSpeed `optimizer` section."""
    return {
        "lr": training.learning_rate,
        "weight_decay": training.weight_decay,
        "betas": list(ADAMW_BETAS),
        "eps": ADAMW_EPS,
    }


def warmup_steps(training: TrainingSpec, total_steps: int) -> int:
    return int(round(training.warmup_ratio * total_steps))


def lr_multiplier(step: int, *, warmup: int, total: int) -> float:
    """Linear warmup over `warmup` optimizer steps, then linear decay to zero at `total`."""
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    remaining = max(1, total - warmup)
    return max(0.0, (total - step) / remaining)


def deepspeed_config(
    training: TrainingSpec,
    *,
    world_size: int,
    precision: ResolvedPrecision,
    use_gpu: bool = False,
    ds_optimizer: bool = False,
) -> dict[str, Any]:
    """The DeepSpeed config for one trial.

    The learning-rate schedule is not part of it: the training loop passes a `LambdaLR` over
    `lr_multiplier` (DeepSpeed's WarmupDecayLR forces two warmup steps starting at lr 0, which
    wastes the first steps of short smoke runs).
    """
    ds = training.deepspeed
    micro = training.batch_size
    gas = training.gradient_accumulation_steps
    zero: dict[str, Any] = {"stage": ds.zero_stage if ds.enabled else 0}
    if ds.enabled and ds.zero_stage >= 1:
        zero.update({"contiguous_gradients": True, "overlap_comm": False})
    if ds.enabled and ds.offload_optimizer:
        zero["offload_optimizer"] = {"device": "cpu", "pin_memory": use_gpu}
    if ds.enabled and ds.offload_parameters:
        zero["offload_param"] = {"device": "cpu", "pin_memory": use_gpu}
    if ds.enabled and ds.zero_stage == 3:
        # Lets the engine consolidate full weights for the plain Hugging Face export.
        zero["stage3_gather_16bit_weights_on_model_save"] = True

    config: dict[str, Any] = {
        "train_micro_batch_size_per_gpu": micro,
        "gradient_accumulation_steps": gas,
        "train_batch_size": micro * gas * world_size,
        "gradient_clipping": GRADIENT_CLIPPING,
        "zero_optimization": zero,
        "bf16": {"enabled": precision == "bf16"},
        "fp16": {"enabled": precision == "fp16", "loss_scale": 0, "initial_scale_power": 16},
        # The client optimizer is torch.optim.AdamW; ZeRO accepts it with these two switches.
        "zero_allow_untested_optimizer": True,
        "zero_force_ds_cpu_optimizer": False,
        "steps_per_print": 1_000_000,
        "wall_clock_breakdown": False,
    }
    if ds_optimizer:
        params = adamw_params(training)
        config["optimizer"] = {"type": "AdamW", "params": params}
    return config
