"""The reconcile loop: one pass per object, level-based and safe to replay.

FineTuneJob: parse -> admit (on every action that starts work) -> backend.act -> read progress or
the result -> promote -> TTL -> one status write, compared with what is on the server. ModelEndpoint:
parse -> backend.apply -> one status write. Objects on a shared Ray cluster carry a finalizer; their
deletion passes run the backend's cleanup (graft.operator.finalizer). Objects are read from the watch-fed store, never
fetched; a pass returns when to look again (None: on the next event or the resync).
"""

from __future__ import annotations

import dataclasses
import logging
from datetime import UTC, datetime, timedelta
from typing import Any

from kubernetes.client import ApiException

from graft.api.endpoint import ModelEndpointStatus
from graft.api.errors import SpecError
from graft.api.references import with_resolved
from graft.api.result import TrainingResult
from graft.api.spec import FineTuneJob
from graft.api.status import Admitted, FineTuneJobStatus, Phase, Progress
from graft.jobs.progress import PROGRESS_FILE
from graft.operator import kube as k
from graft.operator.backends.base import EndpointBackend, JobBackend, RunObservation, RunState, ServeObservation
from graft.operator.backends.rayjob import RayJobBackend, RayServiceBackend
from graft.operator.backends.shared import SharedJobBackend, SharedServeBackend
from graft.operator.cache import Store
from graft.operator.events import EventRecorder
from graft.operator.finalizer import Finalizers, has_finalizer
from graft.operator.gate import Gate, apply_admitted, with_queue_label
from graft.operator.guard import RETRY_SECONDS, Backoff, Failed, attempt, settle, with_error
from graft.operator.metrics import METRICS
from graft.operator.objects import Raw, known, parse_endpoint, parse_job, previous_status
from graft.operator.progress_reads import ProgressReads
from graft.operator.promoter import PromotionConflict, promote
from graft.operator.result import ResultUnavailable, read_result
from graft.operator.settings import OperatorSettings
from graft.operator.shared.jobs import ClusterUnavailable
from graft.operator.status import (
    ACCEPTED,
    RAYJOB_DELETED,
    JobObservation,
    Refusal,
    compute_endpoint_status,
    compute_status,
    iso,
    needs_work,
    status_patch,
)
from graft.operator.storage import unreachable, unsupported_scheme

log = logging.getLogger("graft.operator")
EXPECTED = (ApiException, ClusterUnavailable, PromotionConflict, OSError)  # retried every RETRY_SECONDS
_NOTHING = ServeObservation(exists=False)


def _now() -> datetime:
    return datetime.now(UTC)


def _time(value: str | None) -> datetime | None:
    return datetime.strptime(value, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC) if value else None


class Loop:
    def __init__(self, kube: k.Kube, store: Store, settings: OperatorSettings, events: EventRecorder,
                 progress_reads: ProgressReads) -> None:
        self.kube, self.store, self.settings, self.events = kube, store, settings, events
        self.progress_reads = progress_reads
        self.gate = Gate(store, settings)
        self.rayjobs = RayJobBackend(kube, store, settings)
        self.shared_jobs = SharedJobBackend(settings)
        self.rayservices = RayServiceBackend(kube, store, settings)
        self.shared_serve = SharedServeBackend(settings)
        self.finalizers = Finalizers(kube, store)
        self.backoff = Backoff()

    def job_backend(self, job: FineTuneJob) -> JobBackend:
        """The shared-cluster backend for spec.runtime.cluster, else a RayJob per job."""
        return self.shared_jobs if job.spec.runtime.cluster is not None else self.rayjobs

    # ------------------------------------------------------------------ FineTuneJob
    def reconcile_job(self, namespace: str, name: str) -> float | None:
        raw = self.store.get(k.FINETUNEJOBS, namespace, name)
        if raw is None:
            return None
        deleting = bool(raw["metadata"].get("deletionTimestamp"))
        if deleting and not has_finalizer(raw):
            return None
        outcome = attempt(f"reconciling FineTuneJob {namespace}/{name}",
                          lambda: self.finalizers.finish(k.FINETUNEJOBS, raw, self.cleanup_job) if deleting else self._job(raw),
                          EXPECTED)
        return self._settle("FineTuneJob", k.FINETUNEJOBS, namespace, name, outcome)

    def _settle(self, kind: str, resource: k.Kind, namespace: str, name: str, outcome: float | None | Failed) -> float | None:
        def record(message: str, first: bool) -> None:
            raw = self.store.get(resource, namespace, name)
            if raw is not None:
                self._record_error(resource, raw, message, event=first)

        return settle(self.backoff, (kind, namespace, name), outcome, record)

    def _record_error(self, resource: k.Kind, raw: Raw, message: str, event: bool) -> None:
        """The `Reconciled` condition (reason ReconcileError) through the one status write of each
        kind, and (`event`: the first failure in a row) one Warning Event. A failing write is logged:
        the retry records it again."""
        if event:
            self.events.post(raw, "Warning", "ReconcileError", message)
        try:
            if resource == k.FINETUNEJOBS:
                prev: FineTuneJobStatus | None = previous_status(FineTuneJobStatus, raw)
                status = (prev or FineTuneJobStatus()).model_copy(deep=True)
                self._write_job(raw, prev, JobObservation(), False, computed=status, error=message)
            else:
                ep: ModelEndpointStatus = previous_status(ModelEndpointStatus, raw) or ModelEndpointStatus()
                self._write_endpoint(raw, ep.model_copy(deep=True), None, failure=message)
        except (ApiException, ValueError) as exc:
            log.warning("could not record the reconcile error on %s/%s: %s", raw["metadata"].get("namespace"),
                        raw["metadata"].get("name"), exc)

    def _job(self, raw: Raw) -> float | None:
        prev: FineTuneJobStatus | None = previous_status(FineTuneJobStatus, raw)
        gen, now = raw["metadata"].get("generation"), _now()
        try:
            job = parse_job(raw)
        except SpecError as exc:
            self._write_job(raw, prev, JobObservation(gen, refusal=Refusal("InvalidSpec", [str(e) for e in exc.errors])), False)
            return None
        obs = JobObservation(gen, metric=job.spec.score_metric)
        if prev is not None and Phase(prev.phase).is_terminal:
            ran = any(c.type == ACCEPTED and c.status == "True" for c in prev.conditions)
            return self._finish(raw, _apply(job, prev.admitted), prev, obs, now) if ran else None
        backend = self.job_backend(job)
        admitted = prev.admitted if prev is not None else None
        run_job = self.gate.check(job, prev, iso(now)) if admitted is None else None
        if run_job is not None and run_job.refusal is not None:
            return self._refuse(raw, prev, obs, run_job.refusal)
        if backend is self.shared_jobs:  # admitted, before any Ray work exists: nothing in Kubernetes owns it
            raw = self.finalizers.ensure(k.FINETUNEJOBS, raw)
        effective = run_job.job if run_job is not None and run_job.job is not None else _apply(job, admitted)
        admitted = run_job.admitted if run_job is not None else admitted
        run = backend.observe(effective, prev)
        if backend.starts_work(effective, prev, run):
            if run_job is None:  # admitted before: check again now that work starts (resume, re-create)
                again = self.gate.check(job, prev, iso(now))
                if again.refusal is not None:
                    return self._refuse(raw, prev, obs, again.refusal)
            problem = (unreachable if backend is self.rayjobs else unsupported_scheme)(effective, self.settings)
            if problem is not None:
                return self._refuse(raw, prev, obs, Refusal("StorageRequired", [problem]))
        step = backend.act(effective, prev, run)
        for ev in step.events:
            self.events.post(raw, ev.type, ev.reason, ev.message)
        obs = JobObservation(gen, metric=job.spec.score_metric, admitted=admitted, run=step.obs,
                             progress=self._progress(effective, prev, step.obs, backend))
        obs = self._with_result(effective, prev, obs, backend)
        new = compute_status(prev, obs, now, suspend=job.spec.suspend)
        if Phase(new.phase).is_terminal:
            return self._finish(raw, effective, new, JobObservation(gen, metric=job.spec.score_metric), now)
        self._write_job(raw, prev, obs, job.spec.suspend, computed=new)
        self.gate.settled(job.metadata.namespace or "", job.metadata.name)
        if step.requeue_after is not None:
            return step.requeue_after
        return self.settings.progress_seconds if step.obs.state == RunState.RUNNING else None

    def _refuse(self, raw: Raw, prev: FineTuneJobStatus | None, obs: JobObservation, refusal: Refusal) -> float | None:
        self._write_job(raw, prev, JobObservation(obs.generation, metric=obs.metric, refusal=refusal), False)
        return RETRY_SECONDS if refusal.retryable else None

    def _progress(self, job: FineTuneJob, prev: FineTuneJobStatus | None, run: RunObservation, backend: JobBackend) -> Progress | None:
        """The job's latest progress.json while it runs: what the background reads (at most every
        settings.progress_seconds) brought last, else what the status holds. Never waits on storage."""
        key = (job.metadata.namespace or "", job.metadata.name)
        if run.state != RunState.RUNNING:
            self.progress_reads.forget(key)
            return None
        last = prev.progress if prev is not None else None
        uri = backend.result_source(job, run).uri
        return (self.progress_reads.latest(key, uri.rsplit("/", 1)[0] + "/" + PROGRESS_FILE) if uri else None) or last

    def _with_result(self, job: FineTuneJob, prev: FineTuneJobStatus | None, obs: JobObservation, backend: JobBackend) -> JobObservation:
        """The result of a Ray job that ended. A succeeded job waits for it (it decides the phase);
        a failed one is read once for the reason graft.jobs gave (StorageFailed), and fails without it."""
        run = obs.run
        if run is None or run.state not in (RunState.SUCCEEDED, RunState.FAILED):
            return obs
        source = backend.result_source(job, run)
        obs = _replace(obs, result_uri=source.uri)
        if prev is not None and prev.result:
            return _replace(obs, result=TrainingResult.model_validate(prev.result))
        try:
            return _replace(obs, result=read_result(source))
        except ResultUnavailable as exc:
            return _replace(obs, result_error=str(exc)) if run.state == RunState.SUCCEEDED else obs

    def _finish(self, raw: Raw, job: FineTuneJob, status: FineTuneJobStatus, obs: JobObservation, now: datetime) -> float | None:
        """A terminal job: promote once, collect the RayJob after its TTL, write status once."""
        backend = self.job_backend(job)
        again: float | None = None
        if status.phase == Phase.SUCCEEDED and status.promotion is None and status.result:
            result = TrainingResult.model_validate(status.result)
            dashboard = self.shared_jobs.dashboard(job) if backend is self.shared_jobs else None
            ep = job.spec.serving.endpoint or job.metadata.name
            url = (self.shared_serve if dashboard else self.rayservices).url(job.metadata.namespace or "", ep, dashboard)
            promotion, served = promote(self.kube, self.store, job, result, url)
            obs = _replace(obs, promotion=promotion, endpoint_url=served)
        done = any(c.type == RAYJOB_DELETED and c.status == "True" for c in status.conditions)
        end = _time(status.completion_time)
        if backend is self.rayjobs and not done and status.ray_job_name and end is not None:
            left = (end + timedelta(seconds=job.spec.runtime.ttl_after_finished) - now).total_seconds()
            if left <= 0 and backend.collect(job, status):
                obs = _replace(obs, ray_job_deleted=True)
            elif left > 0:
                again = left + 0.5
        self._write_job(raw, status, obs, job.spec.suspend, computed=compute_status(status, obs, now))
        self.gate.settled(job.metadata.namespace or "", job.metadata.name)
        return again

    def _write_job(self, raw: Raw, prev: FineTuneJobStatus | None, obs: JobObservation, suspend: bool,
                   computed: FineTuneJobStatus | None = None, error: str | None = None) -> None:
        """The one status write of a pass, compared with what the server has; a phase change posts an
        Event. `error`: the pass failed (the Reconciled condition says why); else that condition goes."""
        new = computed or compute_status(prev, obs, _now(), suspend=suspend)
        md = raw["metadata"]
        new.conditions = with_error(new.conditions, error, _now(), md.get("generation"))
        patch = status_patch(known(FineTuneJobStatus, raw.get("status")), new)
        if patch:
            obj = self.kube.patch_status(k.FINETUNEJOBS, md["namespace"], md["name"], patch)
            if obj is not None:
                self.store.put(k.FINETUNEJOBS, obj)
        old_phase = (raw.get("status") or {}).get("phase")
        if new.phase != old_phase:
            warning = new.phase in (Phase.FAILED, Phase.REJECTED)
            self.events.post(raw, "Warning" if warning else "Normal", str(new.phase), new.message)
        METRICS.set_job_phase(md["namespace"], md["name"], str(new.phase))

    def needs_work(self, raw: Raw) -> bool:
        shared = bool(((raw.get("spec") or {}).get("runtime") or {}).get("cluster"))
        return needs_work(previous_status(FineTuneJobStatus, raw), ray_job_path=not shared)

    def cleanup_job(self, raw: Raw) -> bool:
        """The FineTuneJob is being deleted (graft.operator.finalizer): True once nothing runs."""
        status = previous_status(FineTuneJobStatus, raw)
        if status is None or status.admitted is None:
            return True  # never admitted: nothing was submitted, and a refused address is never called
        try:
            job = parse_job(raw)
        except SpecError:
            return True
        return self.job_backend(job).cleanup(job, status)

    def forget_job(self, namespace: str, name: str) -> None:
        METRICS.forget_job(namespace, name)
        self.gate.settled(namespace, name)
        self.finalizers.forget(k.FINETUNEJOBS, namespace, name)
        self.progress_reads.forget((namespace, name))
        self.backoff.succeeded(("FineTuneJob", namespace, name))

    # ------------------------------------------------------------------ ModelEndpoint
    def reconcile_endpoint(self, namespace: str, name: str) -> float | None:
        raw = self.store.get(k.MODELENDPOINTS, namespace, name)
        if raw is None:
            return None
        deleting = bool(raw["metadata"].get("deletionTimestamp"))
        if deleting and not has_finalizer(raw):
            return None
        outcome = attempt(f"reconciling ModelEndpoint {namespace}/{name}",
                          lambda: self.finalizers.finish(k.MODELENDPOINTS, raw, self.cleanup_endpoint) if deleting else self._endpoint(raw),
                          EXPECTED)
        return self._settle("ModelEndpoint", k.MODELENDPOINTS, namespace, name, outcome)

    def _endpoint(self, raw: Raw) -> float | None:
        prev: ModelEndpointStatus | None = previous_status(ModelEndpointStatus, raw)
        gen = raw["metadata"].get("generation")
        try:
            ep = parse_endpoint(raw)
        except SpecError as exc:
            failed = (prev or ModelEndpointStatus()).model_copy(update={"phase": "Failed"})
            self._write_endpoint(raw, failed, str(exc))
            return None
        refused = self.gate.check_endpoint(ep)
        if refused:
            self._write_endpoint(raw, compute_endpoint_status(prev, ep.spec.model, _NOTHING, _now(), gen, self.settings.history_limit,
                                                              error="refused by policy: " + "; ".join(refused)), None)
            return RETRY_SECONDS * 3  # a policy change may allow it
        backend: EndpointBackend = self.shared_serve if ep.spec.cluster is not None else self.rayservices
        if backend is self.shared_serve:
            raw = self.finalizers.ensure(k.MODELENDPOINTS, raw)
        obs = backend.apply(ep)
        for ev in obs.events:
            self.events.post(raw, ev.type, ev.reason, ev.message)
        new = compute_endpoint_status(prev, ep.spec.model, obs, _now(), gen, self.settings.history_limit)
        self._write_endpoint(raw, new, None)
        return self.settings.shared_poll_seconds if ep.spec.cluster is not None and new.phase != "Ready" else None

    def _write_endpoint(self, raw: Raw, new: ModelEndpointStatus, error: str | None, failure: str | None = None) -> None:
        """The one status write of an endpoint pass (`failure`: the pass failed, see `_write_job`)."""
        md = raw["metadata"]
        new.conditions = with_error(new.conditions, failure, _now(), md.get("generation"))
        patch = status_patch(known(ModelEndpointStatus, raw.get("status")), new)
        if patch:
            obj = self.kube.patch_status(k.MODELENDPOINTS, md["namespace"], md["name"], patch)
            if obj is not None:
                self.store.put(k.MODELENDPOINTS, obj)
        if new.phase != (raw.get("status") or {}).get("phase"):
            message = error or (new.conditions[-1].message if new.conditions else new.phase)
            self.events.post(raw, "Warning" if new.phase == "Failed" else "Normal", new.phase, message)

    def cleanup_endpoint(self, raw: Raw) -> bool:
        try:
            ep = parse_endpoint(raw)
        except SpecError:
            return True
        return (self.shared_serve if ep.spec.cluster is not None else self.rayservices).cleanup(ep)


def _apply(job: FineTuneJob, admitted: Admitted | None) -> FineTuneJob:
    """The job as admitted: runtime values and resolved finetunejob:// references applied."""
    if admitted is None:
        return with_queue_label(job)
    return with_resolved(apply_admitted(with_queue_label(job), admitted), admitted.references)


def _replace(obs: JobObservation, **changes: Any) -> JobObservation:
    return dataclasses.replace(obs, **changes)
