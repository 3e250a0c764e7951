"""How one Train worker runs its optimizer steps: a plain loop, DDP, or DeepSpeed.

`choose_backend` picks the cheapest path that gives what the spec asks for:

- one worker, no offload: `single`, a plain PyTorch loop (autocast for bf16/fp16);
- several workers without ZeRO partitioning (`deepspeed.enabled: false` or `zeroStage: 0`): `ddp`,
  PyTorch DistributedDataParallel through Ray Train's `prepare_model`;
- DeepSpeed only where it buys memory: ZeRO stage >= 1 with several workers, or any offload.
  (ZeRO on one worker partitions nothing; its engine only costs time.)

Each engine gives the loop the same small API: `micro_step` (forward, backward and, at a gradient
accumulation boundary, clip + optimizer + scheduler step), `train`/`eval`, the model to call for
evaluation, `full_weights()` for export, and `save`/`load` of exactly the state resume needs.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Literal

from graft.api.spec import TrainingSpec
from graft.jobs.deepspeed_config import GRADIENT_CLIPPING, ResolvedPrecision

Backend = Literal["single", "ddp", "deepspeed"]
STATE_FILE = "state.pt"
DEEPSPEED_DIR = "deepspeed"
DEEPSPEED_TAG = "state"  # not "latest": DeepSpeed writes a file of that name beside the tag directory


def choose_backend(training: TrainingSpec, world_size: int) -> Backend:
    ds = training.deepspeed
    if ds.enabled and (ds.offload_optimizer or ds.offload_parameters or (ds.zero_stage >= 1 and world_size > 1)):
        return "deepspeed"
    return "ddp" if world_size > 1 else "single"


def trainable_state(module: Any) -> dict[str, Any]:
    """What resume needs of the weights: every parameter that trains, plus buffers (all of it without LoRA/freezeBase)."""
    params = dict(module.named_parameters())
    frozen = {name for name, p in params.items() if not p.requires_grad}
    return {k: v for k, v in module.state_dict().items() if k not in frozen}


def optimizer_and_schedule(
    module: Any, training: TrainingSpec, total_steps: int, first_epoch: Callable[[str], int] | None = None
) -> tuple[Any, Any]:
    """AdamW (no weight decay on biases and norms) with linear warmup and decay.

    `first_epoch(name)` (the task's, for `freezeBaseEpochs`): a parameter's learning rate is 0 before
    that epoch. Every parameter stays in the optimizer, so DDP and ZeRO see the same set throughout.
    """
    import torch

    from graft.jobs.deepspeed_config import adamw_params, lr_multiplier, warmup_steps

    params = adamw_params(training)
    by_group: dict[tuple[bool, int], list[Any]] = {}
    for name, p in module.named_parameters():
        if not p.requires_grad:
            continue
        decays = not (p.ndim < 2 or "layernorm" in name.lower() or "norm." in name.lower())
        by_group.setdefault((decays, first_epoch(name) if first_epoch else 1), []).append(p)
    keys = sorted(by_group, key=lambda k: (not k[0], k[1]))
    groups = [{"params": by_group[k], "weight_decay": params["weight_decay"] if k[0] else 0.0} for k in keys]
    optimizer = torch.optim.AdamW(groups, lr=params["lr"], betas=tuple(params["betas"]), eps=params["eps"])
    warm = warmup_steps(training, total_steps)
    per_epoch = max(1, total_steps // max(1, training.epochs))

    def schedule(start_epoch: int) -> Callable[[int], float]:
        frozen_steps = (start_epoch - 1) * per_epoch
        return lambda s: 0.0 if s < frozen_steps else lr_multiplier(s, warmup=warm, total=total_steps)

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, [schedule(k[1]) for k in keys])
    return optimizer, scheduler


class TorchEngine:
    """`single` and `ddp`: fp32 weights, autocast for bf16/fp16 (GradScaler for fp16)."""

    def __init__(
        self, module: Any, training: TrainingSpec, precision: ResolvedPrecision, device: Any, total_steps: int, ddp: bool,
        first_epoch: Callable[[str], int] | None = None,
    ) -> None:
        import torch

        self.training = training
        self.device = device
        self.ddp = ddp
        if ddp:
            import ray.train.torch

            self.model = ray.train.torch.prepare_model(module, parallel_strategy="ddp")
            self.module = self.model.module
        else:
            self.module = self.model = module.to(device)
        self.optimizer, self.scheduler = optimizer_and_schedule(self.module, training, total_steps, first_epoch)
        self.dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
        self.scaler = torch.amp.GradScaler(device.type) if precision == "fp16" else None
        self.gas = training.gradient_accumulation_steps
        self.params = [p for p in self.module.parameters() if p.requires_grad]
        self.backend: Backend = "ddp" if ddp else "single"

    def autocast(self) -> contextlib.AbstractContextManager[Any]:
        import torch

        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.dtype)

    def micro_step(self, loss_fn: Callable[[Any], Any], boundary: bool) -> Any:
        import torch

        sync = contextlib.nullcontext() if (boundary or not self.ddp) else self.model.no_sync()
        with sync:
            with self.autocast():
                loss = loss_fn(self.model)
            scaled = loss / self.gas
            (self.scaler.scale(scaled) if self.scaler else scaled).backward()
        if boundary:
            if self.scaler:
                self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.params, GRADIENT_CLIPPING)
            if self.scaler:
                self.scaler.step(self.optimizer)
                self.scaler.update()
            else:
                self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)
            self.scheduler.step()
        return loss.detach()

    def train(self) -> None:
        self.model.train()

    def eval(self) -> None:
        self.model.eval()

    def eval_model(self) -> Any:
        return self.module  # not the DDP wrapper: evaluation runs no collectives

    @contextlib.contextmanager
    def full_weights(self) -> Iterator[Any]:
        yield self.module

    def save(self, out: Path, rank: int) -> None:
        import torch

        if rank != 0:
            return
        state = {"model": trainable_state(self.module), "optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict()}
        if self.scaler:
            state["scaler"] = self.scaler.state_dict()
        torch.save(state, out / STATE_FILE)

    def load(self, src: Path) -> None:
        import torch

        # weights_only: tensors and primitives only; a pickled object planted in the tenant's storage is refused.
        state = torch.load(src / STATE_FILE, map_location=self.device, weights_only=True)
        missing, unexpected = self.module.load_state_dict(state["model"], strict=False)
        trainable = {n for n, p in self.module.named_parameters() if p.requires_grad}
        if unexpected or trainable & set(missing):
            raise RuntimeError(f"checkpoint {src} does not match the model: missing {sorted(trainable & set(missing))[:5]}, unexpected {unexpected[:5]}")
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if self.scaler and "scaler" in state:
            self.scaler.load_state_dict(state["scaler"])


class DeepSpeedEngine:
    """ZeRO partitioning/offload through `deepspeed.initialize` (client AdamW, LambdaLR schedule)."""

    backend: Backend = "deepspeed"

    def __init__(
        self, module: Any, training: TrainingSpec, precision: ResolvedPrecision, world_size: int, use_gpu: bool, total_steps: int,
        first_epoch: Callable[[str], int] | None = None,
    ) -> None:
        import deepspeed

        from graft.jobs.deepspeed_config import deepspeed_config

        if not use_gpu and os.environ.get("GRAFT_DS_SHM_COMM", "0") != "1":
            # DeepSpeed's CPU shared-memory allreduce is a C++ op compiled on first use (35-100 s, and
            # again whenever its build config changes); gloo needs no build. GRAFT_DS_SHM_COMM=1 opts in.
            import deepspeed.ops

            deepspeed.ops.__compatible_ops__["deepspeed_shm_comm"] = False
        optimizer, scheduler = optimizer_and_schedule(module, training, total_steps, first_epoch)
        config = deepspeed_config(training, world_size=world_size, precision=precision, use_gpu=use_gpu)
        self.engine, _, _, _ = deepspeed.initialize(model=module, optimizer=optimizer, lr_scheduler=scheduler, config=config)
        self.model = self.engine
        self.module = self.engine.module
        self.device = self.engine.device
        self.stage = self.engine.zero_optimization_stage()
        self.frozen = any(not p.requires_grad for p in self.module.parameters())

    def autocast(self) -> contextlib.AbstractContextManager[Any]:
        return contextlib.nullcontext()  # DeepSpeed keeps the weights in bf16/fp16 itself

    def micro_step(self, loss_fn: Callable[[Any], Any], boundary: bool) -> Any:
        loss = loss_fn(self.engine)
        self.engine.backward(loss)
        self.engine.step()  # DeepSpeed steps the optimizer and scheduler at its own accumulation boundary
        return loss.detach()

    def train(self) -> None:
        self.engine.train()

    def eval(self) -> None:
        self.engine.eval()

    def eval_model(self) -> Any:
        return self.engine

    @contextlib.contextmanager
    def full_weights(self) -> Iterator[Any]:
        """The unpartitioned module (a collective under ZeRO-3: every rank must enter)."""
        if self.stage == 3:
            import deepspeed

            with deepspeed.zero.GatheredParameters(list(self.module.parameters()), modifier_rank=None):
                yield self.module
        else:
            yield self.module

    def save(self, out: Path, rank: int) -> None:
        self.engine.save_checkpoint(str(out / DEEPSPEED_DIR), tag=DEEPSPEED_TAG, exclude_frozen_parameters=self.frozen)

    def load(self, src: Path) -> None:
        path, _ = self.engine.load_checkpoint(str(src / DEEPSPEED_DIR), tag=DEEPSPEED_TAG, load_module_strict=not self.frozen)
        if path is None:
            raise RuntimeError(f"checkpoint {src} holds no DeepSpeed state under {DEEPSPEED_DIR}/{DEEPSPEED_TAG}")


def make_engine(
    backend: Backend, module: Any, training: TrainingSpec, precision: ResolvedPrecision, *, world_size: int, use_gpu: bool, device: Any, total_steps: int,
    first_epoch: Callable[[str], int] | None = None,
) -> TorchEngine | DeepSpeedEngine:
    if backend == "deepspeed":
        return DeepSpeedEngine(module, training, precision, world_size, use_gpu, total_steps, first_epoch)
    return TorchEngine(module, training, precision, device, total_steps, ddp=backend == "ddp", first_epoch=first_epoch)
