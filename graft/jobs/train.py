"""The task-agnostic per-worker training loop that Ray Train's `TorchTrainer` runs on every worker.

One trial = one `TorchTrainer` run of `train_loop_per_worker(config)` on `resources.workers`
workers. The task (`graft.jobs.tasks`, chosen by `spec.task`) supplies the model, batches, loss,
metrics and export; the data arrives preprocessed from the driver through the object store. The
engine (`graft.jobs.engine`) is a plain loop on one worker, DDP on several, DeepSpeed only where
ZeRO partitioning or offload buys memory.

Every epoch each rank trains on its shard, evaluates (sums on the device, one all-reduce), and
calls `ray.train.report(metrics, checkpoint=...)`: with a checkpoint every
`checkpoints.frequency` epochs, at the last epoch and when early stopping ends the trial; the
exported model (`hf/`) only in checkpoints whose epoch is the trial's best so far. When Ray Train
restarts the worker group after a failure (`training.maxFailures`), the loop restores the latest
checkpoint (`graft.jobs.checkpoint`) and continues with the next epoch.

Timing in every epoch's metrics: `train_seconds` (the optimizer steps only, so throughput is
`steps / train_seconds`), `seconds` (steps plus evaluation) and `checkpoint_seconds` (the local
save and export; Ray's upload to storage follows).

All ranks run the same number of steps and `report` calls, and early stopping is decided from
metrics identical on every rank, so collectives never hang.
"""

from __future__ import annotations

import math
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from graft.jobs.checkpoint import HF_EXPORT_DIR, META_FILE, Progress

__all__ = ["HF_EXPORT_DIR", "META_FILE", "WorkerConfig", "default_env", "is_improvement", "train_loop_per_worker"]


@dataclass
class WorkerConfig:
    """What the driver sends every worker (through `train_loop_config`)."""

    trial_id: str
    spec: dict[str, Any]  # FineTuneJobSpec.model_dump(mode="json")
    training: dict[str, Any]  # the trial's TrainingSpec (searched values applied), model_dump(mode="json")
    trial_config: dict[str, Any]
    metric: str
    mode: str
    use_gpu: bool
    env: dict[str, str]
    data: Any  # ObjectRef to the job's graft.jobs.tasks.TaskData (or the TaskData itself)

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def worker_threads(cpus_per_worker: float) -> int:
    """Torch threads for a worker: its whole CPUs, at least one."""
    return max(1, int(cpus_per_worker))


def default_env(use_gpu: bool, extra: dict[str, str] | None = None, cpus_per_worker: float = 1) -> dict[str, str]:
    """Environment every worker needs: thread counts, DeepSpeed's accelerator, the op cache, hub settings."""
    threads = str(worker_threads(cpus_per_worker))
    env = {
        "TORCH_EXTENSIONS_DIR": os.environ.get("TORCH_EXTENSIONS_DIR", str(Path.home() / ".cache" / "graft" / "torch-extensions")),
        "TOKENIZERS_PARALLELISM": "false",
        "OMP_NUM_THREADS": threads,
        "MKL_NUM_THREADS": threads,
    }
    if not use_gpu:
        env["DS_ACCELERATOR"] = "cpu"
    for key in ("HF_HUB_OFFLINE", "HF_HOME", "HF_TOKEN", "TRANSFORMERS_OFFLINE", "GRAFT_CACHE_DIR", "GRAFT_DS_SHM_COMM", "DS_ACCELERATOR"):
        if key in os.environ and key not in env:
            env[key] = os.environ[key]
    env.update(extra or {})
    return env


def is_improvement(score: float, best: float | None, mode: str, min_delta: float = 0.0) -> bool:
    if best is None or math.isnan(best):
        return not math.isnan(score)
    if math.isnan(score):
        return False
    return score > best + min_delta if mode == "max" else score < best - min_delta


def train_loop_per_worker(raw: dict[str, Any]) -> None:
    """Ray Train entry point (runs on every worker)."""
    cfg = WorkerConfig(**raw)
    os.environ.update(cfg.env)
    import torch

    torch.set_num_threads(int(cfg.env.get("OMP_NUM_THREADS", "1")))
    _Worker(cfg).run()


class _Worker:
    def __init__(self, cfg: WorkerConfig) -> None:
        import ray
        import ray.train
        import torch

        from graft.api.spec import FineTuneJobSpec, TrainingSpec
        from graft.jobs.tasks import get_task

        self.cfg = cfg
        self.spec = FineTuneJobSpec.model_validate(cfg.spec)
        self.training = TrainingSpec.model_validate(cfg.training)
        self.task = get_task(self.spec, self.training)
        ctx = ray.train.get_context()
        self.rank = ctx.get_world_rank()
        self.world = ctx.get_world_size()
        self.data = ray.get(cfg.data) if isinstance(cfg.data, ray.ObjectRef) else cfg.data
        self.use_gpu = cfg.use_gpu and torch.cuda.is_available()
        torch.manual_seed(self.training.seed)

    def _precision(self) -> Any:
        import torch

        from graft.jobs.deepspeed_config import cpu_bf16_is_fast, resolve_precision

        gpu_bf16 = bool(self.use_gpu and torch.cuda.is_bf16_supported())
        return resolve_precision(str(getattr(self.training.precision, "value", self.training.precision)), gpu=self.use_gpu, gpu_bf16=gpu_bf16, cpu_bf16=cpu_bf16_is_fast())

    def _device(self) -> Any:
        import ray.train.torch
        import torch

        return ray.train.torch.get_device() if self.use_gpu else torch.device("cpu")

    def _batches(self, split: dict[str, Any], epoch: int, train: bool) -> list[tuple[Any, Any]]:
        from graft.jobs.checkpoint import shard
        from graft.jobs.tasks import TaskData

        rows = TaskData.rows(split)
        idx, valid = shard(rows, self.world, self.rank, seed=self.training.seed, epoch=epoch, shuffle=train)
        bs = self.training.batch_size
        return [(idx[i : i + bs], valid[i : i + bs]) for i in range(0, len(idx), bs)]

    def run(self) -> None:
        import ray.train
        import torch

        from graft.jobs.engine import choose_backend, make_engine
        from graft.jobs.sources import resolve_source

        t = self.training
        precision = self.precision = self._precision()
        model_path = resolve_source(self.spec.model.source, field="spec.model.source", revision=self.spec.model.revision)
        self.model_path = model_path
        module = self.task.build_model(model_path, self.data)

        micro_batches = len(self._batches(self.data.train, 0, True))
        gas = t.gradient_accumulation_steps
        steps_per_epoch = max(1, math.ceil(micro_batches / gas))
        if t.max_steps_per_epoch is not None:
            steps_per_epoch = min(steps_per_epoch, t.max_steps_per_epoch)
        micro_per_epoch = min(micro_batches, steps_per_epoch * gas)
        backend = choose_backend(t, self.world)
        self.engine = make_engine(
            backend, module, t, precision, world_size=self.world, use_gpu=self.use_gpu, device=self._device(), total_steps=steps_per_epoch * t.epochs,
            first_epoch=self.task.first_epoch,
        )
        progress = self._restore(ray.train.get_checkpoint())
        if self.rank == 0:
            resumed = f", resumed after epoch {progress.epoch}" if progress.epoch else ""
            print(
                f"[graft] trial {self.cfg.trial_id}: {self.world} worker(s), {backend}, precision {precision}, "
                f"{torch.get_num_threads()} torch thread(s), {self.data.summary()}, {steps_per_epoch} steps/epoch{resumed}",
                flush=True,
            )
        import ray.util

        # Reported with every epoch so the driver can free this trial's workers if the scheduler
        # kills the trial (Ray's own cleanup needs the state API, see graft.jobs.tune).
        pg = ray.util.get_current_placement_group()
        self.placement_group = pg.id.hex() if pg is not None else ""
        for epoch in range(progress.epoch + 1, t.epochs + 1):
            metrics = self._epoch(epoch, micro_per_epoch, steps_per_epoch, progress)
            if metrics.pop("_early"):
                break

    def _epoch(self, epoch: int, micro_per_epoch: int, steps_per_epoch: int, progress: Progress) -> dict[str, Any]:
        import torch

        t = self.training
        started = time.monotonic()
        engine = self.engine
        engine.train()
        loss_sum = torch.zeros((), dtype=torch.float64, device=engine.device)
        batches = self._batches(self.data.train, epoch, True)[:micro_per_epoch]
        self.task.start_epoch(epoch)
        gas = t.gradient_accumulation_steps
        for i, (idx, _) in enumerate(batches):
            batch = {k: v.to(engine.device, non_blocking=True) for k, v in self.task.collate(self.data.train, idx, self.data).items()}
            boundary = (i + 1) % gas == 0 or i + 1 == len(batches)
            loss_sum += engine.micro_step(lambda model, b=batch: self.task.loss(model, b), boundary).to(torch.float64)
        progress.global_step += steps_per_epoch
        train_loss = float(self._all_reduce({"loss": loss_sum})["loss"]) / max(1, len(batches) * self.world)
        train_seconds = time.monotonic() - started  # the optimizer steps only: throughput = steps / train_seconds
        metrics: dict[str, Any] = dict(self._evaluate())
        metrics.update({"epoch": epoch, "epochs": t.epochs, "train_loss": train_loss, "steps": steps_per_epoch, "train_seconds": train_seconds})
        metrics.update(self.task.train_metrics(train_loss))
        metrics["seconds"] = time.monotonic() - started
        score = float(metrics[self.cfg.metric])
        early = False
        if t.early_stopping is not None:
            progress.stale = 0 if is_improvement(score, progress.best, self.cfg.mode, t.early_stopping.min_delta) else progress.stale + 1
            early = progress.stale >= t.early_stopping.patience and epoch < t.epochs
        # Export on ties too: Ray may keep either of two checkpoints with the same score.
        as_good = not math.isnan(score) and (progress.best is None or not is_improvement(progress.best, score, self.cfg.mode))
        if is_improvement(score, progress.best, self.cfg.mode):
            progress.best = score
        progress.epoch = epoch
        metrics["early_stopped"] = 1 if early else 0
        metrics["placement_group"] = self.placement_group
        metrics["restarts"] = progress.restarts
        metrics["precision"] = self.precision
        every = self.spec.checkpoints.frequency
        checkpoint = epoch % every == 0 or epoch == t.epochs or early
        self._report(metrics, progress, checkpoint=checkpoint, export=checkpoint and as_good)
        if self.rank == 0:
            shown = " ".join(f"{k}={v:.4f}" for k, v in metrics.items() if k.startswith("eval_") or k == "train_loss")
            print(f"[graft] trial {self.cfg.trial_id} epoch {epoch}/{t.epochs}: {shown} ({metrics['seconds']:.1f}s)" + (" early stop" if early else ""), flush=True)
        return {**metrics, "_early": early}

    def _all_reduce(self, sums: dict[str, Any]) -> dict[str, Any]:
        """Sum tensors over ranks with one all-reduce (nothing to do on one worker)."""
        import torch
        import torch.distributed as dist

        if self.world == 1 or not dist.is_initialized():
            return sums
        keys = sorted(sums)
        flat = torch.cat([sums[k].reshape(-1).to(torch.float64) for k in keys])
        dist.all_reduce(flat)
        out, at = {}, 0
        for k in keys:
            n = sums[k].numel()
            out[k] = flat[at : at + n].reshape(sums[k].shape)
            at += n
        return out

    def _evaluate(self) -> dict[str, float]:
        import torch

        from graft.jobs.tasks.base import VALID

        engine = self.engine
        engine.eval()
        model = engine.eval_model()
        sums: dict[str, Any] = {}
        with torch.no_grad(), engine.autocast():
            for idx, valid in self._batches(self.data.validation, 0, False):
                batch = {k: v.to(engine.device, non_blocking=True) for k, v in self.task.collate(self.data.validation, idx, self.data).items()}
                batch[VALID] = torch.from_numpy(valid).to(engine.device)
                for k, v in self.task.eval_sums(model, batch).items():
                    sums[k] = sums[k] + v if k in sums else v
        return self.task.metrics(self._all_reduce(sums))

    # -- checkpoints -------------------------------------------------------------------------------

    def _restore(self, checkpoint: Any) -> Progress:
        """Progress from the trial's latest checkpoint (Ray passes it to a restarted worker group).
        A checkpoint this job's state key does not vouch for (graft.jobs.signing) on any rank is not
        loaded on any: the trial starts over."""
        from graft.jobs.checkpoint import load_rng, read_meta, verify_checkpoint
        from graft.jobs.signing import Unverified, state_key

        if checkpoint is None:
            return Progress()
        # A private copy: what is verified is exactly what loads (storage can change in between).
        src = Path(checkpoint.to_directory(tempfile.mkdtemp(prefix=f"graft-restore-r{self.rank}-")))
        try:
            try:
                verify_checkpoint(src, state_key())
                problem = None
            except Unverified as exc:
                problem = str(exc)
            if not self._all_ranks_agree(problem is None):
                print(f"[graft] trial {self.cfg.trial_id}: not restoring its checkpoint ({problem or 'refused on another rank'}); "
                      "the trial starts over", flush=True)
                return Progress()
            _, progress = read_meta(src)
            self.engine.load(src)
            load_rng(src, self.rank)
        finally:
            shutil.rmtree(src, ignore_errors=True)
        progress.restarts += 1
        if self.rank == 0:
            print(f"[graft] trial {self.cfg.trial_id}: restored the checkpoint of epoch {progress.epoch} (step {progress.global_step}, restart {progress.restarts})", flush=True)
        return progress

    def _all_ranks_agree(self, ok: bool) -> bool:
        """True when `ok` on every rank (one all-reduce when the worker group has several)."""
        import torch
        import torch.distributed as dist

        if self.world == 1 or not dist.is_initialized():
            return ok
        flag = torch.tensor([1 if ok else 0], dtype=torch.int32, device=self.engine.device)
        dist.all_reduce(flag, op=dist.ReduceOp.MIN)
        return bool(flag.item())

    def _report(self, metrics: dict[str, Any], progress: Progress, *, checkpoint: bool, export: bool) -> None:
        import ray.train

        from graft.jobs.checkpoint import save_rng, write_manifest, write_meta

        if not checkpoint:
            ray.train.report(metrics)
            return
        tmp = Path(tempfile.mkdtemp(prefix=f"graft-ckpt-r{self.rank}-"))
        try:
            started = time.monotonic()
            self.engine.save(tmp, self.rank)
            save_rng(tmp, self.rank)
            if export:
                with self.engine.full_weights() as module:
                    if self.rank == 0:
                        self.task.export(module, tmp / HF_EXPORT_DIR, self.model_path, self.data)
            metrics["checkpoint_seconds"] = time.monotonic() - started  # local save; Ray's upload comes after
            if self.rank == 0:
                meta = {
                    "trial_id": self.cfg.trial_id,
                    "epoch": progress.epoch,
                    "metrics": metrics,
                    "config": self.cfg.trial_config,
                    "label_names": self.data.label_names,
                    "backend": self.engine.backend,
                    "exported": export,
                }
                write_meta(tmp, meta, progress)
            write_manifest(tmp, self.rank, self.world)
            ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(str(tmp)))
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

