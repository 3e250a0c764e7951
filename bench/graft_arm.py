"""Graft's training path as a benchmark arm: one Ray Train `TorchTrainer` run of
`graft.jobs.train.train_loop_per_worker`, built as graft/jobs/tune.py `_trial` builds it, with
every epoch's reported metrics logged (shared by training_overhead.py and gpu_training.py).
"""

from __future__ import annotations

import json
import shutil
import time
import uuid
from pathlib import Path
from typing import Any

from graft.api.spec import FineTuneJobSpec
from graft.jobs.tasks import TaskData


class EpochLog:
    """A Ray Train callback (it runs in the Train controller) appending every report to a JSON-lines file."""

    def __init__(self, path: str) -> None:
        self.path = path

    def after_report(self, run_context: Any, metrics: list[dict[str, Any]], checkpoint: Any) -> None:
        with open(self.path, "a") as fh:
            fh.write(json.dumps({k: v for k, v in metrics[0].items() if isinstance(v, (int, float, str))}) + "\n")


def graft_fit(spec: FineTuneJobSpec, data: TaskData, storage: Path, *, use_gpu: bool = False, name: str = "") -> tuple[list[dict[str, Any]], float, str]:
    """Run Graft's loop for `spec` on the initialised Ray; return (epoch reports, fit seconds, run name)."""
    import ray
    from ray.train import (
        CheckpointConfig,
        FailureConfig,
        RunConfig,
        ScalingConfig,
        UserCallback,
    )
    from ray.train.torch import TorchTrainer

    from graft.jobs.train import WorkerConfig, default_env, train_loop_per_worker

    callback_cls = type("GraftEpochLog", (EpochLog, UserCallback), {})
    name = name or f"graft-{uuid.uuid4().hex[:8]}"
    log = storage / f"{name}.jsonl"
    res = spec.resources
    env = default_env(use_gpu, None, res.cpus_per_worker)
    worker = WorkerConfig(
        trial_id=name,
        spec=spec.model_dump(mode="json"),
        training=spec.training.model_dump(mode="json"),
        trial_config={},
        metric=spec.score_metric,
        mode=spec.score_mode,
        use_gpu=use_gpu,
        env=env,
        data=ray.put(data),
    )
    per_worker: dict[str, float] = {"CPU": float(res.cpus_per_worker)}
    if use_gpu:
        per_worker["GPU"] = float(max(1, res.gpus_per_worker))
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config=worker.to_dict(),
        scaling_config=ScalingConfig(num_workers=res.workers, use_gpu=use_gpu, resources_per_worker=per_worker),
        run_config=RunConfig(
            name=name,
            storage_path=str(storage),
            checkpoint_config=CheckpointConfig(num_to_keep=spec.checkpoints.num_to_keep, checkpoint_score_attribute=spec.score_metric, checkpoint_score_order=spec.score_mode),
            failure_config=FailureConfig(max_failures=0),
            worker_runtime_env={"env_vars": env},
            callbacks=[callback_cls(str(log))],
        ),
    )
    t0 = time.perf_counter()
    trainer.fit()
    fit_seconds = time.perf_counter() - t0
    reports = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
    shutil.rmtree(storage / name, ignore_errors=True)
    if len(reports) != spec.training.epochs:
        raise RuntimeError(f"graft arm: expected {spec.training.epochs} epoch reports, got {len(reports)}: {reports}")
    return reports, fit_seconds, name
