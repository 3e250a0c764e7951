"""The per-worker training loop that Ray Train's `TorchTrainer` runs on every worker.

One trial = one `TorchTrainer` run of `train_loop_per_worker(config)` on `resources.workers`
workers. Each epoch every rank trains on its shard (DistributedSampler), evaluates, and calls
`ray.train.report(metrics, checkpoint=...)` with its own temporary checkpoint directory: the
DeepSpeed shards of that rank, and on rank 0 also a plain Hugging Face export under `hf/`
(consolidated weights as safetensors, tokenizer, config with id2label). Ray merges the
directories into one checkpoint and keeps the N best by the score metric.

Timing in every epoch's metrics: `train_seconds` (the optimizer steps only, so throughput is
`steps / train_seconds`), `seconds` (steps plus evaluation) and `checkpoint_seconds` (the local
DeepSpeed save and Hugging Face export; Ray's upload to storage follows).

All ranks run the same number of steps and the same number of `report` calls; early stopping
decisions are taken from metrics that are identical on every rank, so collectives never hang.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HF_EXPORT_DIR = "hf"
DEEPSPEED_DIR = "deepspeed"
META_FILE = "graft_checkpoint.json"


@dataclass
class WorkerConfig:
    """What the driver sends every worker (through `train_loop_config`)."""

    trial_id: str
    training: dict[str, Any]  # TrainingSpec.model_dump() with the trial's sampled values applied
    trial_config: dict[str, Any]
    model_source: str
    model_revision: str | None
    trust_remote_code: bool
    label_names: list[str]
    metric: str
    mode: str
    use_gpu: bool
    env: dict[str, str]
    data: Any  # ObjectRef to a graft.jobs.data.LoadedDataset (or the dataset itself)

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def default_env(use_gpu: bool, extra: dict[str, str] | None = None) -> dict[str, str]:
    """Environment every worker needs: DeepSpeed's accelerator, the op build cache, hub settings."""
    env = {
        "TORCH_EXTENSIONS_DIR": os.environ.get("TORCH_EXTENSIONS_DIR", str(Path.home() / ".cache" / "graft" / "torch-extensions")),
        "TOKENIZERS_PARALLELISM": "false",
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


def classification_metrics(labels: list[int], preds: list[int], losses: list[float]) -> dict[str, float]:
    """eval_loss (mean per-sample cross-entropy), eval_accuracy, eval_f1 (macro)."""
    from sklearn.metrics import accuracy_score, f1_score

    return {
        "eval_loss": float(sum(losses) / max(1, len(losses))),
        "eval_accuracy": float(accuracy_score(labels, preds)),
        "eval_f1": float(f1_score(labels, preds, average="macro", zero_division=0)),
    }


def train_loop_per_worker(raw: dict[str, Any]) -> None:
    """Ray Train entry point (runs on every worker)."""
    cfg = WorkerConfig(**raw)
    os.environ.update(cfg.env)
    _Worker(cfg).run()


class _Worker:
    def __init__(self, cfg: WorkerConfig) -> None:
        import ray
        import ray.train
        import torch

        from graft.api.spec import TrainingSpec

        self.cfg = cfg
        self.training = TrainingSpec.model_validate(cfg.training)
        ctx = ray.train.get_context()
        self.rank = ctx.get_world_rank()
        self.world = ctx.get_world_size()
        data = cfg.data
        self.data = ray.get(data) if isinstance(data, ray.ObjectRef) else data
        self.use_gpu = cfg.use_gpu and torch.cuda.is_available()
        torch.manual_seed(self.training.seed)

    # -- setup -----------------------------------------------------------------------------------

    def _precision(self) -> str:
        import torch

        from graft.jobs.deepspeed_config import resolve_precision

        gpu_bf16 = bool(self.use_gpu and torch.cuda.is_bf16_supported())
        cpu_bf16 = bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
        return resolve_precision(str(self.training.precision), gpu=self.use_gpu, gpu_bf16=gpu_bf16, cpu_bf16=cpu_bf16)

    def _model(self, path: Path) -> tuple[Any, Any]:
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        names = self.cfg.label_names
        tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=self.cfg.trust_remote_code)
        model = AutoModelForSequenceClassification.from_pretrained(
            path,
            num_labels=len(names),
            id2label=dict(enumerate(names)),
            label2id={n: i for i, n in enumerate(names)},
            trust_remote_code=self.cfg.trust_remote_code,
        )
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token or tokenizer.unk_token
            model.config.pad_token_id = tokenizer.pad_token_id
        if self.training.lora is not None:
            model = self._lora(model)
        elif self.training.freeze_base:
            prefix = model.base_model_prefix + "."
            for name, param in model.named_parameters():
                param.requires_grad = not name.startswith(prefix)
        return tokenizer, model

    def _lora_config(self) -> Any:
        from peft import LoraConfig, TaskType

        lora = self.training.lora
        assert lora is not None
        return LoraConfig(
            task_type=TaskType.SEQ_CLS,
            r=lora.r,
            lora_alpha=lora.alpha,
            lora_dropout=lora.dropout,
            target_modules=lora.target_modules or None,  # None: peft's default for the model type (BERT: query, value)
        )

    def _lora(self, model: Any) -> Any:
        from peft import get_peft_model

        return get_peft_model(model, self._lora_config())

    def _loaders(self, tokenizer: Any) -> tuple[Any, Any, Any, Any]:
        import torch
        from torch.utils.data import DataLoader, DistributedSampler

        max_len = self.training.max_seq_length

        def encode(texts: list[str], labels: list[int]) -> list[dict[str, Any]]:
            enc = tokenizer(texts, truncation=True, max_length=max_len)
            keys = list(enc.keys())
            return [{**{k: enc[k][i] for k in keys}, "labels": labels[i], "idx": i} for i in range(len(texts))]

        train = encode(self.data.train_texts, self.data.train_labels)
        val = encode(self.data.val_texts, self.data.val_labels)

        def collate(rows: list[dict[str, Any]]) -> dict[str, Any]:
            idx = torch.tensor([r["idx"] for r in rows])
            batch = tokenizer.pad([{k: v for k, v in r.items() if k != "idx"} for r in rows], return_tensors="pt")
            batch["idx"] = idx
            return dict(batch)

        seed = self.training.seed
        train_sampler = DistributedSampler(train, num_replicas=self.world, rank=self.rank, shuffle=True, seed=seed, drop_last=False)
        val_sampler = DistributedSampler(val, num_replicas=self.world, rank=self.rank, shuffle=False, drop_last=False)
        bs = self.training.batch_size
        train_loader = DataLoader(train, batch_size=bs, sampler=train_sampler, collate_fn=collate)
        val_loader = DataLoader(val, batch_size=bs, sampler=val_sampler, collate_fn=collate)
        return train_loader, train_sampler, val_loader, val_sampler

    def _optimizer(self, model: Any, total_steps: int) -> tuple[Any, Any]:
        import torch

        from graft.jobs.deepspeed_config import adamw_params, lr_multiplier, warmup_steps

        params = adamw_params(self.training)
        decay, no_decay = [], []
        for name, p in model.named_parameters():
            if not p.requires_grad:
                continue
            (no_decay if p.ndim < 2 or "LayerNorm" in name or "layernorm" in name else decay).append(p)
        groups = [{"params": decay, "weight_decay": params["weight_decay"]}, {"params": no_decay, "weight_decay": 0.0}]
        groups = [g for g in groups if g["params"]]
        optimizer = torch.optim.AdamW(groups, lr=params["lr"], betas=tuple(params["betas"]), eps=params["eps"])
        warm = warmup_steps(self.training, total_steps)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_multiplier(s, warmup=warm, total=total_steps))
        return optimizer, scheduler

    # -- loop ------------------------------------------------------------------------------------

    def run(self) -> None:
        import deepspeed
        import torch
        import torch.distributed as dist

        from graft.jobs.deepspeed_config import deepspeed_config
        from graft.jobs.sources import resolve_source

        t = self.training
        precision = self._precision()
        model_path = resolve_source(self.cfg.model_source, field="spec.model.source", revision=self.cfg.model_revision)
        tokenizer, model = self._model(model_path)
        train_loader, train_sampler, val_loader, _ = self._loaders(tokenizer)

        gas = t.gradient_accumulation_steps
        steps_per_epoch = max(1, math.ceil(len(train_loader) / gas))
        if t.max_steps_per_epoch is not None:
            steps_per_epoch = min(steps_per_epoch, t.max_steps_per_epoch)
        micro_per_epoch = min(len(train_loader), steps_per_epoch * gas)
        total_steps = steps_per_epoch * t.epochs

        optimizer, scheduler = self._optimizer(model, total_steps)
        ds_cfg = deepspeed_config(t, world_size=self.world, precision=precision, use_gpu=self.use_gpu)  # type: ignore[arg-type]
        if not self.use_gpu and os.environ.get("GRAFT_DS_SHM_COMM", "0") != "1":
            # DeepSpeed's CPU shared-memory allreduce is a C++ op compiled on first use (and again
            # whenever its build config changes); gloo needs no build. GRAFT_DS_SHM_COMM=1 opts in.
            import deepspeed.ops

            deepspeed.ops.__compatible_ops__["deepspeed_shm_comm"] = False
        engine, _, _, _ = deepspeed.initialize(model=model, optimizer=optimizer, lr_scheduler=scheduler, config=ds_cfg)
        device = engine.device
        self.zero_stage = engine.zero_optimization_stage()
        if self.rank == 0:
            print(
                f"[graft] trial {self.cfg.trial_id}: {self.world} worker(s), precision {precision}, ZeRO-{self.zero_stage}, "
                f"{torch.get_num_threads()} torch thread(s), "
                f"{len(self.data.train_texts)} train / {len(self.data.val_texts)} validation rows, {steps_per_epoch} steps/epoch",
                flush=True,
            )

        # Reported with every epoch so the driver can free this trial's workers if the scheduler
        # kills the trial (Ray's own cleanup needs the state API, see graft.jobs.tune).
        import ray.util

        pg = ray.util.get_current_placement_group()
        self.placement_group = pg.id.hex() if pg is not None else ""
        best: float | None = None
        stale = 0
        for epoch in range(1, t.epochs + 1):
            started = time.monotonic()
            train_sampler.set_epoch(epoch)
            engine.train()
            loss_sum = torch.zeros(2, dtype=torch.float64)
            for i, batch in enumerate(train_loader):
                if i >= micro_per_epoch:
                    break
                batch.pop("idx")
                batch = {k: v.to(device) for k, v in batch.items()}
                out = engine(**batch)
                engine.backward(out.loss)
                engine.step()
                loss_sum += torch.tensor([float(out.loss.detach().float()), 1.0], dtype=torch.float64)
            train_seconds = time.monotonic() - started  # the optimizer steps only: throughput = steps / train_seconds
            dist.all_reduce(loss_sum)
            train_loss = float(loss_sum[0] / max(1.0, float(loss_sum[1])))
            metrics: dict[str, Any] = dict(self._evaluate(engine, val_loader, device))
            metrics.update(
                {
                    "epoch": epoch,
                    "epochs": t.epochs,
                    "train_loss": train_loss,
                    "steps": steps_per_epoch,
                    "train_seconds": train_seconds,
                    "seconds": time.monotonic() - started,
                }
            )
            score = float(metrics[self.cfg.metric])
            early = False
            if t.early_stopping is not None:
                if is_improvement(score, best, self.cfg.mode, t.early_stopping.min_delta):
                    stale = 0
                else:
                    stale += 1
                early = stale >= t.early_stopping.patience and epoch < t.epochs
            if is_improvement(score, best, self.cfg.mode):
                best = score
            metrics["early_stopped"] = 1 if early else 0
            metrics["placement_group"] = self.placement_group
            self._report(engine, tokenizer, epoch, metrics)
            if self.rank == 0:
                print(
                    f"[graft] trial {self.cfg.trial_id} epoch {epoch}/{t.epochs}: train_loss={train_loss:.4f} "
                    f"eval_loss={metrics['eval_loss']:.4f} eval_accuracy={metrics['eval_accuracy']:.4f} "
                    f"eval_f1={metrics['eval_f1']:.4f} ({metrics['seconds']:.1f}s)" + (" early stop" if early else ""),
                    flush=True,
                )
            if early:
                break

    def _evaluate(self, engine: Any, loader: Any, device: Any) -> dict[str, float]:
        import torch
        import torch.distributed as dist
        import torch.nn.functional as F

        engine.eval()
        rows: list[tuple[int, int, int, float]] = []
        with torch.no_grad():
            for batch in loader:
                idx = batch.pop("idx").tolist()
                labels = batch["labels"]
                batch = {k: v.to(device) for k, v in batch.items()}
                logits = engine(**batch).logits.float()
                losses = F.cross_entropy(logits, batch["labels"], reduction="none").cpu().tolist()
                preds = logits.argmax(-1).cpu().tolist()
                rows += list(zip(idx, labels.tolist(), preds, losses))
        gathered: list[Any] = [None] * self.world
        dist.all_gather_object(gathered, rows)
        unique: dict[int, tuple[int, int, float]] = {}
        for part in gathered:
            for i, y, p, loss in part:
                unique[i] = (y, p, loss)  # DistributedSampler pads by repeating rows: count each once
        ys = [unique[i][0] for i in sorted(unique)]
        ps = [unique[i][1] for i in sorted(unique)]
        ls = [unique[i][2] for i in sorted(unique)]
        return classification_metrics(ys, ps, ls)

    # -- checkpoints -----------------------------------------------------------------------------

    def _report(self, engine: Any, tokenizer: Any, epoch: int, metrics: dict[str, Any]) -> None:
        import ray.train

        tmp = Path(tempfile.mkdtemp(prefix=f"graft-ckpt-r{self.rank}-"))
        try:
            started = time.monotonic()
            engine.save_checkpoint(str(tmp / DEEPSPEED_DIR), tag=f"epoch-{epoch}")
            self._export_hf(engine, tokenizer, tmp / HF_EXPORT_DIR)
            metrics["checkpoint_seconds"] = time.monotonic() - started  # local save; Ray's upload comes after
            if self.rank == 0:
                meta = {
                    "trial_id": self.cfg.trial_id,
                    "epoch": epoch,
                    "metrics": metrics,
                    "config": self.cfg.trial_config,
                    "label_names": self.cfg.label_names,
                    "zero_stage": self.zero_stage,
                }
                (tmp / META_FILE).write_text(json.dumps(meta, indent=2, default=str))
            ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(str(tmp)))
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    def _full_state_dict(self, engine: Any) -> dict[str, Any] | None:
        """The unpartitioned weights on rank 0 (None elsewhere); a collective under ZeRO-3."""
        module = engine.module
        if self.zero_stage == 3:
            import deepspeed

            with deepspeed.zero.GatheredParameters(list(module.parameters()), modifier_rank=None):
                state = {k: v.detach().cpu().float().clone() for k, v in module.state_dict().items()} if self.rank == 0 else None
            return state
        if self.rank != 0:
            return None
        return {k: v.detach().cpu().float().clone() for k, v in module.state_dict().items()}

    def _export_hf(self, engine: Any, tokenizer: Any, out: Path) -> None:
        """Rank 0 writes a plain Hugging Face directory (fp32 safetensors, tokenizer, config with labels)."""
        import torch
        from transformers import AutoModelForSequenceClassification

        state = self._full_state_dict(engine)
        if self.rank != 0 or state is None:
            return
        module = engine.module
        config = module.get_base_model().config if self.training.lora is not None else module.config
        fresh = AutoModelForSequenceClassification.from_config(config, dtype=torch.float32, trust_remote_code=self.cfg.trust_remote_code)
        if self.training.lora is not None:
            from peft import get_peft_model

            fresh = get_peft_model(fresh, self._lora_config())
            fresh.load_state_dict(state)
            fresh = fresh.merge_and_unload()
        else:
            fresh.load_state_dict(state)
        fresh.config.id2label = dict(enumerate(self.cfg.label_names))
        fresh.config.label2id = {n: i for i, n in enumerate(self.cfg.label_names)}
        fresh.save_pretrained(str(out), safe_serialization=True)
        tokenizer.save_pretrained(str(out))
