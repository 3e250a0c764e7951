"""`run_job`: preflight, load, tune (Ray Train inside Ray Tune), export; writes `result.json`.

The caller initialises Ray (with `graft.jobs.tune.ray_init_resources(spec)` as custom resources
when it starts the cluster itself) and may pass `on_event` to follow progress live.
"""

from __future__ import annotations

import errno
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import NoReturn

from graft.api.errors import FieldError, SpecError
from graft.api.result import TrainingResult, TrialRecord
from graft.api.spec import FineTuneJob, FineTuneJobSpec
from graft.jobs.events import JobEvent, JobFinishedEvent, JobPhase, PhaseEvent
from graft.storage import RESULT_FILE


class TrainingFailed(RuntimeError):
    """Training ran but produced no usable model; `result` is the failed result document."""

    def __init__(self, message: str, result: TrainingResult) -> None:
        super().__init__(message)
        self.result = result


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


class _Phases:
    def __init__(self, emit: Callable[[JobEvent], None]) -> None:
        self.emit = emit
        self.current: JobPhase | None = None
        self.started = time.monotonic()
        self.seconds: dict[str, float] = {}

    def enter(self, phase: JobPhase, message: str = "") -> None:
        now = time.monotonic()
        spent: float | None = None
        if self.current is not None:
            spent = round(now - self.started, 3)
            self.seconds[self.current] = self.seconds.get(self.current, 0.0) + spent
        self.emit(PhaseEvent(phase=phase, previous=self.current, seconds=spent, message=message))
        self.current, self.started = phase, now


def check_cluster(spec: FineTuneJobSpec) -> None:
    """Fail fast when the running cluster can never fit one trial's workers."""
    import ray

    total = ray.cluster_resources()
    res = spec.resources
    errors: list[FieldError] = []
    if res.gpus_per_worker > 0 and total.get("GPU", 0) < res.gpus_per_worker * res.workers:
        errors.append(FieldError("spec.resources.gpusPerWorker", f"{res.workers} worker(s) x {res.gpus_per_worker} GPU need {res.workers * res.gpus_per_worker} GPUs; the Ray cluster has {total.get('GPU', 0):g}"))
    need_cpu = res.workers * res.cpus_per_worker
    if total.get("CPU", 0) < need_cpu:
        errors.append(FieldError("spec.resources", f"{res.workers} worker(s) x {res.cpus_per_worker:g} CPU need {need_cpu:g} CPUs; the Ray cluster has {total.get('CPU', 0):g}"))
    if errors:
        raise SpecError(errors)


def run_job(job: FineTuneJob, run_dir: Path, on_event: Callable[[JobEvent], None] | None = None) -> TrainingResult:
    """Run a FineTuneJob on the already-initialised Ray cluster and write `run_dir/result.json`.

    Raises `SpecError` (before any training, nothing written) when preflight finds problems, and
    `TrainingFailed` (after writing a result with status "failed") when no trial produced a model.
    """
    from graft import storage as store
    from graft.jobs import preflight
    from graft.jobs.export import export_best, prune_checkpoints
    from graft.jobs.partition import check_sources
    from graft.jobs.tracker import epoch_metrics
    from graft.jobs.tune import job_storage, run_tuning

    run_dir = store.ensure_dir(Path(run_dir))
    emit = on_event or (lambda _e: None)
    spec = job.spec
    started_at = _now()
    phases = _Phases(emit)

    phases.enter("preflight")
    check_sources(job)  # nothing of another namespace's part is read, whatever a link says
    found = preflight.inspect(spec)
    check_cluster(spec)
    import ray

    notes = [*found.warnings, preflight.concurrency_warning(spec, ray.cluster_resources())]
    phases.enter("loading", "; ".join(f"warning: {n}" for n in notes if n))
    data = found.task.prepare(found.dataset, found.model_path)  # once per job, shared by every trial
    storage = job_storage(job, run_dir)
    base = TrainingResult(
        job_name=job.metadata.name,
        status="failed",
        metric=spec.score_metric,
        mode=spec.score_mode,
        label_names=data.label_names,
        started_at=started_at,
        finished_at=started_at,
    )

    try:
        store.check_writable(storage)
    except store.StorageError as exc:
        return _fail(base, str(exc), [], phases, run_dir, emit, reason=STORAGE_FAILURE)

    phases.enter("tuning", f"{data.summary()}; {spec.tuning.num_trials} trial(s), {spec.resources.workers} worker(s) each")
    outcome = None
    error: str | None = None
    reason: str | None = None
    from ray.exceptions import RayError
    from ray.tune.error import TuneError

    try:
        outcome = run_tuning(job, data, storage, emit)
    except (TuneError, RayError, RuntimeError, ValueError, OSError) as exc:  # how Tune/Train surface failures
        error = f"tuning failed: {exc}"
        reason = storage_failure(exc)
        if reason:
            error = f"tuning failed: storage {storage} failed: {storage_cause(str(exc))}"

    if outcome is not None:
        base = base.model_copy(update=outcome.tracker.recovery())
    trials = outcome.tracker.records() if outcome else []
    best = outcome.tracker.best() if outcome else None
    if best is None:
        failed = [t for t in trials if t.error]
        broken = next((t for t in failed if storage_failure(t.error or "")), None)
        if broken is not None and error is None:
            reason, error = STORAGE_FAILURE, f"storage {storage} failed (trial {broken.trial_id}): {storage_cause(broken.error or '')}"
        message = error or (f"every trial failed; first error: {failed[0].error}" if failed else "no trial reported a checkpoint")
        return _fail(base, message, trials, phases, run_dir, emit, reason=reason)

    trial_id, epoch, ckpt = best
    best_record = next(t for t in trials if t.trial_id == trial_id)
    best_epoch = next(h for h in best_record.history if h.epoch == epoch)
    best_metrics = epoch_metrics(best_epoch)

    phases.enter("exporting", f"best trial {trial_id} epoch {epoch}")
    meta = {
        "job": job.metadata.name,
        "trial_id": trial_id,
        "epoch": epoch,
        "metric": spec.score_metric,
        "score": best_metrics[spec.score_metric],
        "config": best_record.config,
        "checkpoint": ckpt,
        "label_names": data.label_names,
    }
    try:
        uri = export_best(ckpt, storage, meta)
    except OSError as exc:
        return _fail(base, f"exporting the best checkpoint {ckpt} to {storage} failed: {exc}", trials, phases, run_dir, emit, reason=STORAGE_FAILURE)
    assert outcome is not None
    others = [p for state in outcome.tracker.trials.values() if state.trial_id != trial_id for p in state.checkpoints.values()]
    prune_checkpoints(ckpt, others, storage)
    extra = found.task.report(uri, data) or {}  # extra result fields, e.g. distillation's comparison

    phases.enter("done")
    result = base.model_copy(
        update={
            "status": "succeeded",
            "message": f"best trial {trial_id} ({spec.score_metric}={best_metrics[spec.score_metric]:.4f} at epoch {epoch})",
            "best_trial_id": trial_id,
            "best_config": best_record.config,
            "best_metrics": best_metrics,
            "best_score": best_metrics[spec.score_metric],
            "precision": best_record.precision,
            "model_uri": uri,
            "checkpoint_uri": ckpt,
            "trials": trials,
            "finished_at": _now(),
            "phase_seconds": phases.seconds,
        }
    )
    if extra:
        result = TrainingResult.model_validate({**result.model_dump(), **extra})
    write_result(result, run_dir)
    emit(JobFinishedEvent(status="succeeded", best_trial_id=trial_id, best_score=result.best_score, model_uri=uri, message=result.message))
    return result


STORAGE_FAILURE = "StorageFailed"


def storage_failure(exc: BaseException | str) -> str | None:
    """STORAGE_FAILURE when the exception (or one it was raised from), or an error text, is a storage problem."""
    from graft.storage import StorageError

    if isinstance(exc, str):
        return STORAGE_FAILURE if any(marker in exc for marker in _STORAGE_MARKERS) else None
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, StorageError) or (isinstance(seen, OSError) and seen.errno in _STORAGE_ERRNOS):
            return STORAGE_FAILURE
        if storage_failure(str(seen)):
            return STORAGE_FAILURE
        seen = seen.__cause__ or seen.__context__
    return None


def storage_cause(text: str) -> str:
    """The line of an error text (often a whole Ray traceback) that names the storage problem, e.g.
    `OSError: When getting information for key ...: AWS Error NETWORK_CONNECTION ...`; the text's
    last line when none does."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    named = [line for line in lines if any(marker in line for marker in _STORAGE_MARKERS)]
    return (named or lines or [text])[-1]


_STORAGE_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES)
_STORAGE_MARKERS = (
    "No space left", "Disk quota", "AWS Error", "NoSuchBucket", "AccessDenied", "Access Denied", "Read-only file system", "StorageError",
)


def _fail(
    base: TrainingResult,
    message: str,
    trials: list[TrialRecord],
    phases: _Phases,
    run_dir: Path,
    emit: Callable[[JobEvent], None],
    reason: str | None = None,
) -> NoReturn:
    phases.enter("failed", message)
    result = base.model_copy(
        update={"status": "failed", "reason": reason, "message": message, "trials": trials, "finished_at": _now(), "phase_seconds": phases.seconds}
    )
    write_result(result, run_dir)
    emit(JobFinishedEvent(status="failed", message=message))
    raise TrainingFailed(message, result)


def write_result(result: TrainingResult, run_dir: Path) -> Path:
    path = Path(run_dir) / RESULT_FILE
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(result.model_dump_json(by_alias=True, indent=2, exclude_none=True))
    tmp.replace(path)
    return path


def read_result(path: Path) -> TrainingResult:
    return TrainingResult.model_validate_json(Path(path).read_text())
