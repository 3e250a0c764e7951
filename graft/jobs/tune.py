"""Ray Tune over the search space: one Tune trial per config, each running a Ray Train `TorchTrainer`.

Ray 2.60 runs Train V2, where a `TorchTrainer` cannot be passed to `Tuner` directly; the pattern
is a Tune *function* trainable that builds the `TorchTrainer` and calls `.fit()`, with
`TuneReportCallback` forwarding every epoch's metrics (and checkpoint path) to Tune, so ASHA
sees `epoch` as its time attribute.

Resources: each trial's driver would normally hold a CPU, which on a small cluster starves the
trial's own Train workers. Trial drivers instead ask for one unit of a custom resource,
`graft_trial_driver`; whoever starts the cluster passes `ray_init_resources(spec)` to
`ray.init(resources=...)` (or `--resources` to `ray start` on the head). On a cluster without it
(e.g. an existing KubeRay cluster) trial drivers take a tiny CPU fraction instead.
"""

from __future__ import annotations

import math
import os
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import ray
from ray import tune
from ray.tune import Callback
from ray.tune.experiment import Trial
from ray.tune.search.basic_variant import BasicVariantGenerator

from graft.api.quantity import quantity_bytes
from graft.api.result import EpochMetrics, TrialRecord
from graft.api.spec import METRICS, POD_SIZED_WORKERS_ENV, FineTuneJob, FineTuneJobSpec
from graft.jobs.events import JobEvent, TrialEpochEvent, TrialFinishedEvent, TrialStartedEvent, TrialStoppedEvent
from graft.jobs.search_space import apply_config, describe, param_space
from graft.jobs.tasks import TaskData
from graft.jobs.train import WorkerConfig, default_env, train_loop_per_worker

TRIAL_DRIVER_RESOURCE = "graft_trial_driver"
FALLBACK_DRIVER_CPU = 0.01
SWEEP_INTERVAL_S = 2.0
EPOCH_METRICS = tuple(METRICS)  # every metric a task may report; an epoch carries those its task reports


def worker_resources(spec: FineTuneJobSpec, *, pod_sized: bool) -> dict[str, float]:
    """Ray resources of one Train worker: CPUs, GPUs, and memoryPerWorker as Ray's `memory` resource
    (so `graft run` and shared clusters place workers only where that much memory is free), except in
    a RayJob, whose worker pods are already sized by it."""
    per_worker: dict[str, float] = {"CPU": spec.resources.cpus_per_worker}
    if spec.resources.gpus_per_worker > 0:
        per_worker["GPU"] = spec.resources.gpus_per_worker
    if spec.resources.memory_per_worker and not pod_sized:
        per_worker["memory"] = float(quantity_bytes(spec.resources.memory_per_worker))
    return per_worker


def ray_init_resources(spec: FineTuneJobSpec) -> dict[str, float]:
    """Custom resources to give the cluster so `maxConcurrentTrials` trial drivers fit beside their workers."""
    return {TRIAL_DRIVER_RESOURCE: float(spec.tuning.max_concurrent_trials)}


def trial_driver_resources() -> dict[str, float]:
    """What one trial's driver asks for on the current cluster."""
    if ray.cluster_resources().get(TRIAL_DRIVER_RESOURCE, 0) >= 1:
        return {TRIAL_DRIVER_RESOURCE: 1.0}
    return {"CPU": FALLBACK_DRIVER_CPU}


def unique_run_name(job_name: str) -> str:
    """A fresh name per invocation, so Ray never resumes an older run's checkpoints."""
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    return f"{job_name}-{stamp}-{uuid.uuid4().hex[:6]}"


def max_epochs(spec: FineTuneJobSpec) -> int:
    """The most epochs any trial can run (epochs may itself be searched)."""
    param = spec.tuning.search_space.get("epochs")
    if param is None:
        return spec.training.epochs
    if param.type == "choice":
        return max(int(v) for v in (param.values or [spec.training.epochs]))
    return int(param.high or spec.training.epochs)


def make_scheduler(spec: FineTuneJobSpec) -> Any:
    sched = spec.tuning.scheduler
    if sched.type == "fifo":
        from ray.tune.schedulers import FIFOScheduler

        return FIFOScheduler()
    from ray.tune.schedulers import ASHAScheduler

    top = max_epochs(spec)
    return ASHAScheduler(
        time_attr="epoch",
        max_t=top,
        grace_period=min(sched.grace_period, top),
        reduction_factor=sched.reduction_factor,
    )


def make_search_alg(spec: FineTuneJobSpec) -> Any:
    seed = spec.training.seed
    if spec.tuning.search_algorithm == "optuna" and spec.tuning.search_space:
        import optuna
        from ray.tune.search.optuna import OptunaSearch

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        return OptunaSearch(seed=seed)
    # Passing a generator instance makes Tune ignore TuneConfig.max_concurrent_trials: set it here too.
    return BasicVariantGenerator(random_state=seed, max_concurrent=spec.tuning.max_concurrent_trials)


@dataclass
class TrialPlan:
    """Everything a trial driver needs; shipped once through the object store by `with_parameters`."""

    job_name: str
    spec: FineTuneJobSpec
    data: Any  # ObjectRef to the job's TaskData: put in the object store once per job
    run_name: str
    train_storage: str
    env: dict[str, str]


def _trial(config: dict[str, Any], plan: TrialPlan) -> None:
    """Tune function trainable: run one TorchTrainer with the sampled config."""
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer
    from ray.tune.integration.ray_train import TuneReportCallback

    spec = plan.spec
    trial_id = tune.get_context().get_trial_id()
    training = apply_config(spec.training, config)
    use_gpu = spec.resources.gpus_per_worker > 0
    worker = WorkerConfig(
        trial_id=trial_id,
        spec=spec.model_dump(mode="json"),
        training=training.model_dump(mode="json"),
        trial_config=describe(config),
        metric=spec.score_metric,
        mode=spec.score_mode,
        use_gpu=use_gpu,
        env=plan.env,
        data=plan.data,
    )
    per_worker = worker_resources(spec, pod_sized=os.environ.get(POD_SIZED_WORKERS_ENV) == "1")
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config=worker.to_dict(),
        scaling_config=ScalingConfig(num_workers=spec.resources.workers, use_gpu=use_gpu, resources_per_worker=per_worker),
        run_config=RunConfig(
            name=f"{plan.run_name}-{trial_id}",
            storage_path=plan.train_storage,
            checkpoint_config=CheckpointConfig(
                num_to_keep=spec.checkpoints.num_to_keep,
                checkpoint_score_attribute=spec.score_metric,
                checkpoint_score_order=spec.score_mode,
            ),
            # Worker-group failures restart from the trial's latest checkpoint (graft.jobs.train).
            failure_config=FailureConfig(max_failures=spec.training.max_failures),
            # Thread counts and DeepSpeed settings must be in place before the worker imports torch.
            worker_runtime_env={"env_vars": plan.env},
            callbacks=[TuneReportCallback()],
        ),
    )
    trainer.fit()


@dataclass
class _TrialState:
    trial_id: str
    config: dict[str, float | int | str | bool]
    epochs: int
    history: list[EpochMetrics] = field(default_factory=list)
    checkpoints: dict[int, str] = field(default_factory=dict)
    scores: dict[int, float] = field(default_factory=dict)
    early_stopped: bool = False
    placement_group: str = ""
    status: str = "running"
    error: str | None = None


def _discard(_event: JobEvent) -> None:
    """The event sink of a TrialTracker restored from Tune's experiment state."""


class TrialTracker(Callback):
    """A Tune callback in the driver process: records every trial's history and emits JobEvents."""

    def __init__(self, spec: FineTuneJobSpec, emit: Callable[[JobEvent], None]) -> None:
        self.spec = spec
        self.metric = spec.score_metric
        self.mode = spec.score_mode
        self.emit = emit
        self.trials: dict[str, _TrialState] = {}
        self._last_sweep = 0.0

    def __getstate__(self) -> dict[str, Any]:
        # Tune pickles its callbacks into the experiment state; the event sink (a live console,
        # a queue) stays with the driver's own instance and is not part of that state.
        state = dict(self.__dict__)
        state["emit"] = _discard
        return state

    def _state(self, trial: Trial) -> _TrialState:
        state = self.trials.get(trial.trial_id)
        if state is None:
            config = describe(trial.config)
            epochs = int(config.get("epochs", self.spec.training.epochs))
            state = _TrialState(trial.trial_id, config, epochs)
            self.trials[trial.trial_id] = state
        return state

    def on_step_end(self, iteration: int, trials: list[Trial], **info: Any) -> None:
        now = time.monotonic()
        if now - self._last_sweep >= SWEEP_INTERVAL_S:
            self._last_sweep = now
            release_orphaned_placement_groups()

    def on_trial_start(self, iteration: int, trials: list[Trial], trial: Trial, **info: Any) -> None:
        state = self._state(trial)
        self.emit(TrialStartedEvent(trial_id=state.trial_id, config=state.config, epochs=state.epochs))

    def on_trial_result(self, iteration: int, trials: list[Trial], trial: Trial, result: dict[str, Any], **info: Any) -> None:
        if "epoch" not in result or self.metric not in result:
            return
        state = self._state(trial)
        epoch = int(result["epoch"])
        metrics = {k: float(result[k]) for k in EPOCH_METRICS if k in result}
        entry = EpochMetrics(epoch=epoch, steps=int(result.get("steps", 0)), seconds=float(result.get("seconds", 0.0)), **metrics)
        state.history = [h for h in state.history if h.epoch != epoch] + [entry]
        state.scores[epoch] = float(result[self.metric])
        if result.get("checkpoint_path"):
            state.checkpoints[epoch] = str(result["checkpoint_path"])
        state.early_stopped = bool(result.get("early_stopped"))
        state.placement_group = str(result.get("placement_group") or state.placement_group)
        self.emit(TrialEpochEvent(trial_id=state.trial_id, epoch=epoch, epochs=state.epochs, metrics=metrics, config=state.config, score=state.scores[epoch]))

    def on_trial_complete(self, iteration: int, trials: list[Trial], trial: Trial, **info: Any) -> None:
        state = self._state(trial)
        done = len(state.history)
        if done < state.epochs:
            state.status = "stopped_early"
            reason = "early_stopping" if state.early_stopped else "scheduler"
            if reason == "scheduler":
                release_placement_group(state.placement_group)
            self.emit(TrialStoppedEvent(trial_id=state.trial_id, epoch=done, epochs=state.epochs, reason=reason))
        else:
            state.status = "completed"
        self.emit(TrialFinishedEvent(trial_id=state.trial_id, status=state.status, epochs_completed=done, best_score=self.best_score(state)))  # type: ignore[arg-type]

    def on_trial_error(self, iteration: int, trials: list[Trial], trial: Trial, **info: Any) -> None:
        state = self._state(trial)
        state.status = "failed"
        state.error = _trial_error(trial)
        release_placement_group(state.placement_group)
        self.emit(TrialFinishedEvent(trial_id=state.trial_id, status="failed", epochs_completed=len(state.history), best_score=self.best_score(state), error=state.error))

    # -- summaries ---------------------------------------------------------------------------------

    def best_score(self, state: _TrialState) -> float | None:
        scores = [s for s in state.scores.values() if not math.isnan(s)]
        if not scores:
            return None
        return max(scores) if self.mode == "max" else min(scores)

    def records(self) -> list[TrialRecord]:
        out = []
        for state in self.trials.values():
            status = state.status if state.status != "running" else ("completed" if len(state.history) >= state.epochs else "failed")
            last = sorted(state.history, key=lambda h: h.epoch)[-1] if state.history else None
            out.append(
                TrialRecord(
                    trial_id=state.trial_id,
                    status=status,  # type: ignore[arg-type]
                    config=state.config,
                    epochs_completed=len(state.history),
                    stopped_at_epoch=len(state.history) if status == "stopped_early" else None,
                    metrics=epoch_metrics(last) if last else {},
                    best_score=self.best_score(state),
                    history=sorted(state.history, key=lambda h: h.epoch),
                    error=state.error,
                )
            )
        return out

    def best(self) -> tuple[str, int, str] | None:
        """(trial_id, epoch, checkpoint_path) of the best reported epoch whose checkpoint still exists."""
        candidates: list[tuple[float, str, int, str]] = []
        for state in self.trials.values():
            for epoch, score in state.scores.items():
                path = state.checkpoints.get(epoch)
                if path is None or math.isnan(score) or not _exists(path):
                    continue
                candidates.append((score, state.trial_id, epoch, path))
        if not candidates:
            return None
        pick = max if self.mode == "max" else min
        score, trial_id, epoch, path = pick(candidates, key=lambda c: c[0])
        return trial_id, epoch, path


def epoch_metrics(entry: EpochMetrics) -> dict[str, float]:
    """The metrics one epoch reported (its task's), by name."""
    return {k: float(v) for k in EPOCH_METRICS if (v := getattr(entry, k)) is not None}


def release_placement_group(pg_hex: str) -> bool:
    """Remove a stopped trial's Train worker placement group if it is still held.

    When Tune stops a trial (ASHA) it kills the trial's actor, and with it the Train controller;
    the controller's placement group outlives it (placement groups belong to the job). Ray Train's
    detached PlacementGroupCleaner frees it only if the Ray state API answers, which needs the
    dashboard and, on a machine with several Ray clusters, RAY_ADDRESS. Without this the stopped
    trial's CPUs stay reserved and the next trials never start.
    """
    if not pg_hex:
        return False
    from ray.util.placement_group import PlacementGroup, remove_placement_group

    pg = PlacementGroup(ray.PlacementGroupID(bytes.fromhex(pg_hex)))
    state = ray.util.placement_group_table(pg).get("state")
    if state in (None, "REMOVED"):
        return False
    remove_placement_group(pg)
    return True


def _actor_placement_groups() -> list[Any]:
    """This job's live placement groups that an actor (not a driver) created, as GCS records."""
    from ray._private.state import state as global_state
    from ray.core.generated import gcs_pb2

    job_id = ray.get_runtime_context().get_job_id()
    out = []
    for raw in global_state._connect_and_get_accessor().get_placement_group_table():
        info = gcs_pb2.PlacementGroupTableData.FromString(raw)
        if info.is_detached or info.state == gcs_pb2.PlacementGroupTableData.REMOVED:
            continue
        if info.creator_job_id.hex() != job_id:
            continue
        if not info.creator_actor_id or ray.ActorID(info.creator_actor_id).is_nil():
            continue  # created by a driver (e.g. Tune's own trial groups), not by an actor
        out.append(info)
    return out


def release_orphaned_placement_groups() -> list[str]:
    """Remove this job's placement groups whose creating actor is dead (e.g. a killed Train controller).

    The same rule as Ray Train's PlacementGroupCleaner, read from the GCS instead of the state API:
    a stopped trial's controller can start a new worker group (and placement group) in the moment
    between losing its workers and being killed itself. Detached groups and other jobs' groups are
    never touched. Returns the ids removed.
    """
    from ray.util.placement_group import PlacementGroup, remove_placement_group

    removed = []
    for info in _actor_placement_groups():
        if info.creator_actor_dead:
            remove_placement_group(PlacementGroup(ray.PlacementGroupID(info.placement_group_id)))
            removed.append(info.placement_group_id.hex())
    return removed


def final_sweep(timeout_s: float = 15.0) -> None:
    """After tuning, wait (briefly) for every trial's actor-created placement group to go, freeing orphans."""
    deadline = time.monotonic() + timeout_s
    while True:
        release_orphaned_placement_groups()
        if not _actor_placement_groups() or time.monotonic() >= deadline:
            return
        time.sleep(0.5)


def _exists(path: str) -> bool:
    if "://" in path:
        import fsspec

        fs, p = fsspec.core.url_to_fs(path)
        return bool(fs.exists(p))
    return Path(path).exists()


NO_ERROR_RECORDED = "trial failed (no error recorded)"


def _short(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    # The last lines of the traceback name the real cause; keep the message short.
    return "\n".join(lines[-6:])[:2000]


def _trial_error(trial: Trial) -> str:
    err = trial.get_error()
    return _short(str(err)) if err is not None else NO_ERROR_RECORDED


@dataclass
class TuneOutcome:
    run_name: str
    tracker: TrialTracker
    errors: list[str]


def run_tuning(
    job: FineTuneJob,
    data: TaskData,
    storage: str,
    emit: Callable[[JobEvent], None],
) -> TuneOutcome:
    """Run every trial (Ray must be initialised) and return what the tracker recorded."""
    spec = job.spec
    run_name = unique_run_name(job.metadata.name)
    use_gpu = spec.resources.gpus_per_worker > 0
    plan = TrialPlan(
        job_name=job.metadata.name,
        spec=spec,
        data=ray.put(data),
        run_name=run_name,
        train_storage=_join(storage, "runs", run_name, "train"),
        env=default_env(use_gpu, spec.runtime.env, spec.resources.cpus_per_worker),
    )
    tracker = TrialTracker(spec, emit)
    search_alg = make_search_alg(spec)
    trainable = tune.with_resources(tune.with_parameters(_trial, plan=plan), trial_driver_resources())
    tuner = tune.Tuner(
        trainable,
        param_space=param_space(spec.tuning),
        tune_config=tune.TuneConfig(
            metric=spec.score_metric,
            mode=spec.score_mode,
            num_samples=spec.tuning.num_trials,
            # The random search generator limits concurrency itself (Tune ignores this for it).
            max_concurrent_trials=None if isinstance(search_alg, BasicVariantGenerator) else spec.tuning.max_concurrent_trials,
            scheduler=make_scheduler(spec),
            search_alg=search_alg,
            trial_name_creator=lambda t: f"trial-{t.trial_id}",
            trial_dirname_creator=lambda t: f"trial-{t.trial_id}",
        ),
        run_config=tune.RunConfig(
            name=run_name,
            storage_path=_join(storage, "runs"),
            callbacks=[tracker],
            verbose=0,
        ),
    )
    grid = tuner.fit()
    final_sweep()
    errors = []
    for r in grid:
        if r.error is None:
            continue
        errors.append(str(r.error))
        # The error file may not exist yet when on_trial_error runs; the result grid has it.
        state = tracker.trials.get(Path(r.path).name.removeprefix("trial-"))
        if state is not None and (state.error is None or state.error == NO_ERROR_RECORDED):
            state.error = _short(str(r.error))
    return TuneOutcome(run_name=run_name, tracker=tracker, errors=errors)


def _join(base: str, *parts: str) -> str:
    if "://" in base:
        return "/".join([base.rstrip("/"), *parts])
    return str(Path(base).expanduser().resolve().joinpath(*parts))


def storage_root(spec: FineTuneJobSpec, run_dir: Path) -> str:
    """`spec.checkpoints.storage` (path or URI), else the run directory."""
    return spec.checkpoints.storage or str(Path(run_dir).resolve())


__all__ = [
    "TRIAL_DRIVER_RESOURCE",
    "TrialTracker",
    "TuneOutcome",
    "make_scheduler",
    "make_search_alg",
    "ray_init_resources",
    "run_tuning",
    "storage_root",
    "trial_driver_resources",
    "unique_run_name",
]
