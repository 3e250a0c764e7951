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

Resume across attempts: the experiment is named after the job's uid (`<job>-<uid8>`) under
`<job dir>/runs/`, so a later attempt of the same job (RayJob retry, operator resubmit, resume
after suspend) finds it and continues it with `Tuner.restore`: finished trials are not rerun,
unfinished and errored trials continue, and each continued trial's `TorchTrainer` (same run name,
same storage) reloads its checkpoint-manager snapshot, so its workers start from the trial's
latest checkpoint. Without a uid (`graft run`) every invocation gets a fresh name.

Ray unpickles what it restores, and the job's storage is tenant-writable: an attempt restores the
experiment only when the keyed manifest the earlier attempts wrote vouches for every state file
(graft.jobs.signing, graft.jobs.state_signer); otherwise it removes those files and starts over.
"""

from __future__ import annotations

import os
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import ray
from ray import tune
from ray.tune.experiment import Trial
from ray.tune.search.basic_variant import BasicVariantGenerator

from graft import storage as store
from graft.api.quantity import quantity_bytes
from graft.api.spec import POD_SIZED_WORKERS_ENV, WORKER_POD_RESOURCE, FineTuneJob, FineTuneJobSpec
from graft.api.statekey import STATE_KEY_ENV
from graft.jobs.events import JobEvent, JobResumedEvent
from graft.jobs.placement import (
    final_sweep,
    release_orphaned_placement_groups,
    release_placement_group,
)
from graft.jobs.search_space import apply_config, describe, param_space
from graft.jobs.signing import state_key
from graft.jobs.state_signer import StateSigner, restorable
from graft.jobs.tasks import TaskData
from graft.jobs.tracker import PROGRESS_FILE, TrialTracker
from graft.jobs.train import WorkerConfig, default_env, train_loop_per_worker
from graft.jobs.verified_fs import verified_filesystem

TRIAL_DRIVER_RESOURCE = "graft_trial_driver"
FALLBACK_DRIVER_CPU = 0.01


def worker_resources(spec: FineTuneJobSpec, *, pod_sized: bool) -> dict[str, float]:
    """Ray resources of one Train worker: CPUs, GPUs, and memoryPerWorker as Ray's `memory` resource
    (so `graft run` and shared clusters place workers only where that much memory is free), except in
    a RayJob, whose worker pods are already sized by it: there each worker takes its pod's one
    WORKER_POD_RESOURCE instead, so workers land one per pod."""
    per_worker: dict[str, float] = {"CPU": spec.resources.cpus_per_worker}
    if spec.resources.gpus_per_worker > 0:
        per_worker["GPU"] = spec.resources.gpus_per_worker
    if pod_sized:
        per_worker[WORKER_POD_RESOURCE] = 1.0
    elif spec.resources.memory_per_worker:
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
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    return f"{job_name}-{stamp}-{uuid.uuid4().hex[:6]}"


def job_uid(job: FineTuneJob) -> str:
    return job.metadata.uid_or_empty()


def experiment_name(job: FineTuneJob) -> str:
    """`<job>-<uid8>`: the same for every attempt of one job, so later attempts resume it."""
    uid = job_uid(job)
    return f"{job.metadata.name}-{uid[:8]}" if uid else unique_run_name(job.metadata.name)


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
    train_filesystem: Any = None  # pyarrow filesystem of train_storage (object storage), else None


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
            storage_filesystem=plan.train_filesystem,
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


NO_ERROR_RECORDED = "trial failed (no error recorded)"


def _short(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    # The last lines of the traceback name the real cause; keep the message short.
    return "\n".join(lines[-6:])[:2000]


_RAY_OOM = re.compile(r"killed due to the node running low on memory\. Memory on the node \(IP: ([^,]+), ID: [0-9a-f]+\) "
                      r"was ([0-9.]+[KMGT]?B) used / ([0-9.]+[KMGT]?B) limit")


def explain_error(text: str) -> str:
    """A trial's error as a person should read it: Ray's memory monitor kill (a page of process
    tables) becomes one sentence naming the fields to change; anything else, its last lines."""
    oom = _RAY_OOM.search(text)
    if oom is not None:
        node, used, limit = oom.groups()
        return (f"a Train worker ran out of memory: Ray killed it when its node ({node}) used {used} of its {limit} "
                "limit; raise spec.resources.memoryPerWorker, or lower training.batchSize / training.maxSeqLength")
    return _short(text)


def trial_error(trial: Trial) -> str:
    err = trial.get_error()
    return explain_error(str(err)) if err is not None else NO_ERROR_RECORDED


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
    """Run every trial (Ray must be initialised) and return what the tracker recorded.

    `storage` is the job's directory (graft.jobs.entrypoint.job_storage); the experiment lives in
    `<storage>/runs/<experiment_name(job)>/` and is resumed when an earlier attempt left it there."""
    spec = job.spec
    run_name = experiment_name(job)
    runs = store.join(storage, store.RUNS_DIR)
    remote = store.is_remote(runs)
    fs, runs_path = store.arrow_filesystem(runs)
    filesystem = fs if remote else None
    use_gpu = spec.resources.gpus_per_worker > 0
    key = state_key()
    plan = TrialPlan(
        job_name=job.metadata.name,
        spec=spec,
        data=ray.put(data),
        run_name=run_name,
        train_storage=f"{runs_path}/{run_name}/train",
        train_filesystem=filesystem,
        # The state key reaches the Train workers (they sign and verify checkpoints) through their
        # runtime env, over any spec.runtime.env value of the same name.
        env={**default_env(use_gpu, spec.runtime.env, spec.resources.cpus_per_worker), STATE_KEY_ENV: key.decode("utf-8")},
    )
    scheme = f"{urlparse(runs).scheme}://" if remote else ""
    tracker = TrialTracker(spec, emit, progress_uri=store.join(runs, run_name, PROGRESS_FILE), scheme=scheme)
    tracker.load()
    experiment = f"{runs_path}/{run_name}"
    # Restore only what this job wrote (graft.jobs.signing): Ray unpickles what it restores.
    signed_fs, signed_path = store.fsspec_filesystem(store.join(runs, run_name))
    ignore = {PROGRESS_FILE}  # Graft's own JSON, read as data
    manifest, _ = restorable(signed_fs, signed_path, key, ignore)
    signer = StateSigner(signed_fs, signed_path, key, ignore, manifest)
    restored = manifest is not None and tune.Tuner.can_restore(experiment, storage_filesystem=filesystem)
    resumed = tracker.begin_attempt(restored)
    if resumed is not None:
        emit(JobResumedEvent(attempt=resumed.attempt, restored=restored, trials_skipped=resumed.trials_skipped, trials_resumed=resumed.trials_resumed, time_lost_seconds=resumed.time_lost_seconds))
    trainable = tune.with_resources(tune.with_parameters(_trial, plan=plan), trial_driver_resources())
    if restored:
        tuner = tune.Tuner.restore(
            experiment,
            trainable,
            resume_unfinished=True,
            resume_errored=True,
            param_space=param_space(spec.tuning),
            # Every state file Ray reads is checked as it is read (no window after the check above).
            storage_filesystem=verified_filesystem(filesystem, experiment, signer.manifest, key, ignore),
        )
        # The restored Tuner carries the callbacks pickled by the first attempt (their event sink
        # dropped); this attempt's tracker, loaded from graft_progress.json, takes their place.
        local = tuner._local_tuner
        assert local is not None  # a local (not Ray Client) Tuner
        local.get_run_config().callbacks = [tracker, signer]
    else:
        tuner = _new_tuner(spec, trainable, run_name, runs_path, filesystem, [tracker, signer])
        signer.sign_new_tuner(tuner)
    grid = tuner.fit()
    signer.sign_staging()
    final_sweep()
    errors = []
    for r in grid:
        if r.error is None:
            continue
        errors.append(str(r.error))
        # The error file may not exist yet when on_trial_error runs; the result grid has it.
        state = tracker.trials.get(Path(r.path).name.removeprefix("trial-"))
        if state is not None and (state.error is None or state.error == NO_ERROR_RECORDED):
            state.error = explain_error(str(r.error))
    return TuneOutcome(run_name=run_name, tracker=tracker, errors=errors)


def _new_tuner(spec: FineTuneJobSpec, trainable: Any, run_name: str, runs_path: str, filesystem: Any, callbacks: list[Any]) -> tune.Tuner:
    search_alg = make_search_alg(spec)
    return tune.Tuner(
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
            storage_path=runs_path,
            storage_filesystem=filesystem,
            callbacks=callbacks,
            verbose=0,
        ),
    )


def job_storage(job: FineTuneJob, run_dir: Path) -> str:
    """The job's directory: `graft.storage.job_dir` under `spec.checkpoints.storage` (path or URI),
    else under the run directory. On Kubernetes `<root>/<namespace>/<job>-<uid8>`."""
    root = job.spec.checkpoints.storage or str(Path(run_dir).resolve())
    return store.job_dir(root, job.metadata.namespace, job.metadata.name, job_uid(job))


__all__ = [
    "TRIAL_DRIVER_RESOURCE",
    "TrialTracker",
    "TuneOutcome",
    "experiment_name",
    "job_storage",
    "make_scheduler",
    "make_search_alg",
    "ray_init_resources",
    "release_orphaned_placement_groups",
    "release_placement_group",
    "run_tuning",
    "trial_driver_resources",
    "unique_run_name",
]
