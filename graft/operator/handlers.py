"""kopf handlers: thin wiring of the pure parts (builders, reconcile, promotion) to the API (kube).

FineTuneJob: create/resume/update(spec) -> validate, admit, get-or-create ConfigMap + RayJob;
every RayJob event and a slow timer -> mirror the RayJob into status, read the result, promote,
delete the finished RayJob after its TTL. ModelEndpoint: create/resume/update(spec), RayService
events and a timer -> get-or-create/patch the RayService, mirror its status. Status is only ever
computed by `graft.operator.reconcile`.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import logging
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from typing import Any

import kopf
from kubernetes.client import ApiException
from pydantic import ValidationError

from graft.api.endpoint import ModelEndpoint, ModelEndpointSpec, ModelEndpointStatus, ServedModel
from graft.api.errors import SpecError
from graft.api.load import parse_as, parse_spec
from graft.api.result import TrainingResult
from graft.api.spec import FineTuneJob, ObjectMeta
from graft.api.status import FineTuneJobStatus, Phase, Promotion
from graft.operator import kube as k
from graft.operator.builders import (
    build_endpoint,
    build_promoted_model,
    build_rayjob,
    build_rayservice,
    build_spec_configmap,
)
from graft.operator.builders.common import UnsupportedSpec
from graft.operator.builders.rayjob import job_result_uri
from graft.operator.names import (
    ANNOTATION_MODEL_VERSION,
    ANNOTATION_SPEC_HASH,
    LABEL_ENDPOINT,
    LABEL_JOB,
    LABEL_MANAGED_BY,
    MANAGED_BY,
    PREFIX,
    ray_name,
    serve_url,
    spec_configmap_name,
)
from graft.operator.promotion import decide_promotion
from graft.operator.reconcile import (
    ACCEPTED,
    EndpointObservation,
    JobObservation,
    compute_endpoint_status,
    compute_status,
    iso,
    needs_resync,
    status_patch,
)
from graft.operator.result import ResultSource, ResultUnavailable, read_result
from graft.operator.settings import OperatorSettings
from graft.operator.shared.jobs import ClusterUnavailable
from graft.operator.shared.runtime import SharedRuntime

try:  # written by the chart engineer; optional so the operator runs without policies
    from graft.api.policy import FineTunePolicy
    from graft.operator.policy import admit, apply_kueue
except ImportError:  # pragma: no cover - depends on the checkout
    admit = None  # type: ignore[assignment]
    apply_kueue = None  # type: ignore[assignment]

try:
    from graft.operator.metrics import METRICS
except ImportError:  # pragma: no cover
    METRICS = None  # type: ignore[assignment]

GROUP, VERSION = "graft.dev", "v1alpha1"
log = logging.getLogger("graft.operator")


def _now() -> datetime:
    return datetime.now(timezone.utc)


def _parse_time(value: str | None) -> datetime | None:
    if not value:
        return None
    return datetime.strptime(value, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc)


def _known(model: type, status: dict[str, Any] | None) -> dict[str, Any]:
    fields = {f.alias or n for n, f in model.model_fields.items()}
    return {key: v for key, v in (status or {}).items() if key in fields}


def previous_job_status(raw: dict[str, Any]) -> FineTuneJobStatus | None:
    """The status the operator wrote last (None before its first write: no phase yet)."""
    if not (raw.get("status") or {}).get("phase"):
        return None
    try:
        return FineTuneJobStatus.model_validate(_known(FineTuneJobStatus, raw.get("status")))
    except ValidationError:
        return None


def previous_endpoint_status(raw: dict[str, Any]) -> ModelEndpointStatus | None:
    if not (raw.get("status") or {}).get("phase"):
        return None
    try:
        return ModelEndpointStatus.model_validate(_known(ModelEndpointStatus, raw.get("status")))
    except ValidationError:
        return None


def _meta(raw: dict[str, Any]) -> ObjectMeta:
    m = raw["metadata"]
    return parse_as(
        ObjectMeta,
        {"name": m["name"], "namespace": m.get("namespace"), "labels": m.get("labels") or {},
         "annotations": {}, "uid": m.get("uid"), "generation": m.get("generation")},
        prefix="metadata",
    )


def parse_job(raw: dict[str, Any]) -> FineTuneJob:
    """The typed FineTuneJob of an API object; SpecError names each bad field (semantic checks)."""
    return FineTuneJob(metadata=_meta(raw), spec=parse_spec(dict(raw.get("spec") or {})))


def parse_endpoint(raw: dict[str, Any]) -> ModelEndpoint:
    spec = parse_as(ModelEndpointSpec, dict(raw.get("spec") or {}), prefix="spec")
    return ModelEndpoint(metadata=_meta(raw), spec=spec)


class Operator:
    """The operator's state: API access, settings and one lock per object (handlers run in threads)."""

    def __init__(self, kube: k.Kube, settings: OperatorSettings) -> None:
        self.kube = kube
        self.settings = settings
        self.shared = SharedRuntime(settings)  # spec.runtime.cluster / spec.cluster: a shared Ray cluster
        self._locks: dict[tuple[str, str, str], threading.Lock] = {}
        self._guard = threading.Lock()
        self._rayjob_status: dict[tuple[str, str], str] = {}  # RayJob status last reconciled, per RayJob

    @contextmanager
    def locked(self, kind: str, namespace: str, name: str) -> Iterator[None]:
        with self._guard:
            lock = self._locks.setdefault((kind, namespace, name), threading.Lock())
        with lock:
            yield

    # ================================================================ FineTuneJob
    def reconcile_job(self, raw: dict[str, Any], *, strict: bool = False) -> None:
        """Level-based: look at the job and its RayJob, act, write status. Safe to replay.
        strict: a create/update handler (its body is current; a bad spec raises kopf.PermanentError).
        Otherwise the job is read again under the lock: event and resync callers may hold a stale copy."""
        ns, name = raw["metadata"]["namespace"], raw["metadata"]["name"]
        with self.locked("FineTuneJob", ns, name):
            fresh = self.kube.get(k.FINETUNEJOBS, ns, name) if not strict else raw
            if fresh is None or fresh["metadata"].get("deletionTimestamp"):
                return
            self._reconcile_job(fresh, strict=strict)

    def _reconcile_job(self, raw: dict[str, Any], *, strict: bool) -> None:
        ns, name = raw["metadata"]["namespace"], raw["metadata"]["name"]
        gen = raw["metadata"].get("generation")
        prev = previous_job_status(raw)
        prev_phase = Phase(prev.phase) if prev else None
        accepted_before = prev is not None and any(c.type == ACCEPTED and c.status == "True" for c in prev.conditions)

        try:
            job = parse_job(raw)
        except SpecError as exc:
            errors = [str(e) for e in exc.errors]
            self._write_job_status(raw, prev, JobObservation(generation=gen, spec_errors=errors))
            if strict:
                raise kopf.PermanentError(f"invalid spec: {'; '.join(errors)}") from exc
            return

        if prev is not None and prev_phase is not None and prev_phase.is_terminal and accepted_before:
            self._finish(raw, job, prev)
            return

        if not accepted_before:
            admitted = self._admit(raw, job, prev, strict=strict)
            if admitted is None:
                return
            job = admitted

        if job.spec.runtime.cluster is not None:
            self._reconcile_shared_job(raw, job, prev)
            return

        rj_name = ray_name(name)
        obs = JobObservation(generation=gen, ray_job_name=rj_name, suspend=job.spec.suspend)
        rayjob = self.kube.get(k.RAYJOBS, ns, rj_name)
        if rayjob is None:
            if prev is None or prev.ray_job_name != rj_name:
                prev = self._write_job_status(raw, prev, obs)  # the child's name is in status before the child exists
            try:
                rayjob = self._create_children(job)
            except UnsupportedSpec as exc:
                self._write_job_status(raw, prev, JobObservation(generation=gen, unsupported=str(exc)))
                if strict:
                    raise kopf.PermanentError(str(exc)) from exc
                return
        if rayjob is not None:
            rayjob = self._sync_suspend(job, rayjob)
            self._remember_rayjob(rayjob)
        obs = JobObservation(generation=gen, ray_job_name=rj_name, ray_job=rayjob, suspend=job.spec.suspend)
        obs = self._with_result(job, prev, obs)
        new = self._write_job_status(raw, prev, obs)
        if new is not None and Phase(new.phase).is_terminal:
            self._finish(raw, job, new)

    @staticmethod
    def _rayjob_key(rayjob: Any) -> tuple[tuple[str, str], str]:
        md = rayjob.get("metadata") or {}
        status = json.dumps(rayjob.get("status") or {}, sort_keys=True, default=str)
        return (md.get("namespace", ""), md.get("name", "")), status

    def _remember_rayjob(self, rayjob: dict[str, Any]) -> None:
        key, status = self._rayjob_key(rayjob)
        self._rayjob_status[key] = status

    def rayjob_changed(self, rayjob: Any) -> bool:
        """Whether a RayJob event carries a status this operator has not reconciled yet (always
        true after a restart: the memory is per process, so nothing is ever skipped for good)."""
        key, status = self._rayjob_key(rayjob)
        return self._rayjob_status.get(key) != status

    def _admit(
        self, raw: dict[str, Any], job: FineTuneJob, prev: FineTuneJobStatus | None, *, strict: bool
    ) -> FineTuneJob | None:
        """Policy admission, once per job; returns the job with policy defaults, None when refused."""
        if admit is None:
            return job
        policies = [FineTunePolicy.model_validate(_strip_meta(p)) for p in self.kube.list_policies()]
        if not policies:
            return job
        ns = job.metadata.namespace or ""
        labels = self.kube.namespace_labels(ns)
        limited = any(p.spec.limits.max_concurrent_jobs is not None for p in policies)
        active = self._active_jobs(ns, job.metadata.name) if limited else 0
        adm = admit(job, labels, policies, active)
        if adm.allowed:
            if METRICS is not None:
                METRICS.record_admission("allowed")
            return adm.job
        gen = raw["metadata"].get("generation")
        if adm.retryable:
            if METRICS is not None:
                METRICS.record_admission("waiting")
            waiting = (prev or FineTuneJobStatus()).model_copy(update={"message": "waiting: " + "; ".join(adm.violations)})
            self._patch_job_status(raw, waiting)
            raise kopf.TemporaryError("; ".join(adm.violations), delay=30)
        if METRICS is not None:
            METRICS.record_admission("rejected")
        self._write_job_status(raw, prev, JobObservation(generation=gen, rejection=adm.violations))
        if strict:
            raise kopf.PermanentError("rejected by policy: " + "; ".join(adm.violations))
        return None

    def _active_jobs(self, namespace: str, exclude: str) -> int:
        count = 0
        for other in self.kube.list(k.FINETUNEJOBS, namespace):
            if other["metadata"]["name"] == exclude:
                continue
            st = other.get("status") or {}
            accepted = any(c.get("type") == ACCEPTED and c.get("status") == "True" for c in st.get("conditions") or [])
            if accepted and not Phase(st.get("phase") or "Pending").is_terminal:
                count += 1
        return count

    def _create_children(self, job: FineTuneJob) -> dict[str, Any]:
        rayjob = build_rayjob(job, self.settings)  # build first: an unsupported spec creates nothing
        if apply_kueue is not None:
            rayjob = apply_kueue(rayjob, job)
        self.kube.create_configmap(build_spec_configmap(job, self.settings))
        obj, created = self.kube.create(k.RAYJOBS, rayjob)
        if created:
            log.info("created RayJob %s/%s", job.metadata.namespace, rayjob["metadata"]["name"])
        return obj

    def _sync_suspend(self, job: FineTuneJob, rayjob: dict[str, Any]) -> dict[str, Any]:
        current = bool((rayjob.get("spec") or {}).get("suspend"))
        want = job.spec.suspend
        if current == want or (job.spec.runtime.queue_name and not want):  # Kueue owns un-suspending
            return rayjob
        md = rayjob["metadata"]
        return self.kube.patch(k.RAYJOBS, md["namespace"], md["name"], {"spec": {"suspend": want}})

    def _with_result(self, job: FineTuneJob, prev: FineTuneJobStatus | None, obs: JobObservation) -> JobObservation:
        st = (obs.ray_job or {}).get("status") or {}
        if st.get("jobDeploymentStatus") != "Complete" or st.get("jobStatus") != "SUCCEEDED":
            return obs
        if prev is not None and prev.result:
            return dataclasses.replace(obs, result=TrainingResult.model_validate(prev.result))
        source = ResultSource(
            uri=job_result_uri(job, self.settings), dashboard_url=st.get("dashboardURL"), job_id=st.get("jobId")
        )
        try:
            return dataclasses.replace(obs, result=read_result(source))
        except ResultUnavailable as exc:
            return dataclasses.replace(obs, result_error=str(exc))

    def _finish(self, raw: dict[str, Any], job: FineTuneJob, status: FineTuneJobStatus) -> None:
        """After a terminal phase: promote once, then delete the RayJob after its TTL."""
        gen = raw["metadata"].get("generation")
        obs = JobObservation(generation=gen, ray_job_name=status.ray_job_name)
        if status.phase == Phase.SUCCEEDED and status.promotion is None and status.result:
            promotion, url = self._promote(job, TrainingResult.model_validate(status.result))
            if promotion is not None:
                obs = dataclasses.replace(obs, promotion=promotion, endpoint_url=url)
        done = any(c.type == "RayJobDeleted" and c.status == "True" for c in status.conditions)
        end = _parse_time(status.completion_time)
        ttl = job.spec.runtime.ttl_after_finished
        if not done and status.ray_job_name and end is not None and _now() >= end + timedelta(seconds=ttl):
            ns = job.metadata.namespace or ""
            self.kube.delete(k.RAYJOBS, ns, status.ray_job_name)
            self.kube.delete_configmap(ns, spec_configmap_name(job.metadata.name))
            obs = dataclasses.replace(obs, ray_job_deleted=True)
        if obs.promotion is not None or obs.ray_job_deleted:
            self._write_job_status(raw, status, obs)

    def _promote(self, job: FineTuneJob, result: TrainingResult) -> tuple[Promotion | None, str | None]:
        serving = job.spec.serving
        if not serving.enabled:
            return None, None
        ns = job.metadata.namespace or ""
        ep_name = serving.endpoint or job.metadata.name
        url = (self.shared.endpoint_url(self.shared.job_dashboard(job), ns, ep_name) if job.spec.runtime.cluster
               else serve_url(ray_name(ep_name), ns, self.settings.serve_port))
        for _ in range(5):  # optimistic concurrency: other jobs may promote into the same endpoint
            existing = self.kube.get(k.MODELENDPOINTS, ns, ep_name)
            current = ServedModel.model_validate(existing["spec"]["model"]) if existing else None
            if current is not None and current.source_job == job.metadata.name and current.uri == result.model_uri:
                return Promotion(endpoint=ep_name, decision="promoted", reason=f"serving as version {current.version}",
                                 time=iso(_now())), url
            decision = decide_promotion(serving.promotion, current, result)
            record = Promotion(endpoint=ep_name, decision=decision.decision, reason=decision.reason, time=iso(_now()))
            if not decision.promote:
                return record, None
            try:
                if existing is None:
                    _, created = self.kube.create(k.MODELENDPOINTS, build_endpoint(job, result, ep_name))
                    if not created:
                        continue
                else:
                    version = (current.version if current else 0) + 1
                    self.kube.patch(k.MODELENDPOINTS, ns, ep_name, {
                        "metadata": {"resourceVersion": existing["metadata"]["resourceVersion"]},
                        "spec": {"model": build_promoted_model(job, result, version)},
                    })
            except ApiException as exc:
                if exc.status == 409:
                    continue
                raise
            log.info("promoted %s/%s into ModelEndpoint %s: %s", ns, job.metadata.name, ep_name, decision.reason)
            return record, url
        raise kopf.TemporaryError(f"ModelEndpoint {ep_name} kept changing while promoting; retrying", delay=5)

    def _write_job_status(
        self, raw: dict[str, Any], prev: FineTuneJobStatus | None, obs: JobObservation
    ) -> FineTuneJobStatus | None:
        new = compute_status(prev, obs, _now())
        ns, name = raw["metadata"]["namespace"], raw["metadata"]["name"]
        if not self._patch_job_status(raw, new):
            return None
        old_phase = prev.phase if prev else None
        if new.phase != old_phase:
            _phase_event(self.kube, raw, new)
        if METRICS is not None:
            METRICS.set_job_phase(ns, name, str(new.phase))
        return new

    def _patch_job_status(self, raw: dict[str, Any], new: FineTuneJobStatus) -> bool:
        """Write `new` over the status `raw` holds; `raw` then holds `new`. False if the job is gone."""
        patch = status_patch(_known(FineTuneJobStatus, raw.get("status")), new)
        if patch and self.kube.patch_status(
            k.FINETUNEJOBS, raw["metadata"]["namespace"], raw["metadata"]["name"], patch
        ) is None:
            return False
        raw["status"] = new.to_wire()
        return True

    def _reconcile_shared_job(self, raw: dict[str, Any], job: FineTuneJob, prev: FineTuneJobStatus | None) -> None:
        """spec.runtime.cluster: the job's Ray job on the shared cluster stands in for a RayJob."""
        try:
            view = self.shared.observe_job(job, prev)
        except ClusterUnavailable as exc:
            raise kopf.TemporaryError(str(exc), delay=10) from exc
        if view.submitted:
            kopf.event(raw, type="Normal", reason="Submitted", message=f"Ray job {view.submission_id} submitted to {view.dashboard}")
        if view.stopped:
            kopf.event(raw, type="Normal", reason="Stopping", message=f"Ray job {view.submission_id} is being stopped (spec.suspend)")
        obs = JobObservation(generation=raw["metadata"].get("generation"), ray_job=view.ray_job,
                             suspend=job.spec.suspend, log_uri=view.log_uri)
        obs = self._with_result(job, prev, obs)
        new = self._write_job_status(raw, prev, obs)
        if new is not None and Phase(new.phase).is_terminal:
            self._finish(raw, job, new)

    def delete_shared_job(self, raw: dict[str, Any], retry: int) -> None:
        """Finalizer of a FineTuneJob on a shared cluster (nothing in Kubernetes owns its Ray job)."""
        try:
            job = parse_job(raw)
        except SpecError:
            return
        try:
            done = self.shared.cleanup_job(job, previous_job_status(raw))
        except ClusterUnavailable as exc:
            if retry >= 10:
                log.warning("giving up on the Ray job of %s/%s: %s", job.metadata.namespace, job.metadata.name, exc)
                return
            raise kopf.TemporaryError(str(exc), delay=10) from exc
        if not done:
            raise kopf.TemporaryError("waiting for the Ray job to stop", delay=2)

    # ================================================================ ModelEndpoint
    def reconcile_endpoint(self, raw: dict[str, Any], *, strict: bool = False) -> None:
        ns, name = raw["metadata"]["namespace"], raw["metadata"]["name"]
        with self.locked("ModelEndpoint", ns, name):
            fresh = self.kube.get(k.MODELENDPOINTS, ns, name) if not strict else raw
            if fresh is None or fresh["metadata"].get("deletionTimestamp"):
                return
            self._reconcile_endpoint(fresh, strict=strict)

    def _reconcile_endpoint(self, raw: dict[str, Any], *, strict: bool) -> None:
        ns, name = raw["metadata"]["namespace"], raw["metadata"]["name"]
        prev = previous_endpoint_status(raw)
        try:
            ep = parse_endpoint(raw)
        except SpecError as exc:
            st = (prev or ModelEndpointStatus()).model_copy(update={"phase": "Failed"})
            self.kube.patch_status(k.MODELENDPOINTS, ns, name, status_patch(_known(ModelEndpointStatus, raw.get("status")), st))
            if strict:
                raise kopf.PermanentError(str(exc)) from exc
            return
        if ep.spec.cluster is not None:
            self._reconcile_shared_endpoint(raw, ep, prev)
            return
        rs_name = ray_name(name)
        base = EndpointObservation(
            generation=raw["metadata"].get("generation"), model=ep.spec.model, application=name,
            url=serve_url(rs_name, ns, self.settings.serve_port), ray_service_name=rs_name,
            history_limit=self.settings.history_limit,
        )
        try:
            desired = build_rayservice(ep, self.settings)
        except UnsupportedSpec as exc:
            self._write_endpoint_status(raw, prev, dataclasses.replace(base, error=str(exc)))
            return
        desired["metadata"]["annotations"][ANNOTATION_SPEC_HASH] = _hash(desired["spec"])
        rs = self.kube.get(k.RAYSERVICES, ns, rs_name)
        if rs is None:
            rs, _ = self.kube.create(k.RAYSERVICES, desired)
        elif (rs["metadata"].get("annotations") or {}).get(ANNOTATION_SPEC_HASH) != desired["metadata"]["annotations"][ANNOTATION_SPEC_HASH]:
            rs = self.kube.patch(k.RAYSERVICES, ns, rs_name, {
                "metadata": {"annotations": desired["metadata"]["annotations"]}, "spec": desired["spec"],
            })
            log.info("updated RayService %s/%s to model version %s", ns, rs_name, ep.spec.model.version)
        self._write_endpoint_status(raw, prev, dataclasses.replace(base, ray_service=rs))

    def _reconcile_shared_endpoint(self, raw: dict[str, Any], ep: ModelEndpoint, prev: ModelEndpointStatus | None) -> None:
        """spec.cluster: the endpoint is a Serve application on the shared cluster."""
        try:
            view = self.shared.observe_endpoint(ep)
        except ClusterUnavailable as exc:
            raise kopf.TemporaryError(str(exc), delay=10) from exc
        if view.deployed:
            kopf.event(raw, type="Normal", reason="Deploying", message=f"Serve application {view.application} set to model version "
                                                        f"{ep.spec.model.version} ({ep.spec.model.uri})")
        self._write_endpoint_status(raw, prev, EndpointObservation(
            generation=raw["metadata"].get("generation"), model=ep.spec.model, application=view.application,
            url=view.url, ray_service=view.ray_service, history_limit=self.settings.history_limit,
        ))

    def delete_shared_endpoint(self, raw: dict[str, Any], retry: int) -> None:
        """Finalizer of a ModelEndpoint on a shared cluster: remove its Serve application."""
        try:
            ep = parse_endpoint(raw)
        except SpecError:
            return
        try:
            self.shared.remove_endpoint(ep)
        except ClusterUnavailable as exc:
            if retry >= 10:
                log.warning("giving up on the Serve application of %s/%s: %s", ep.metadata.namespace, ep.metadata.name, exc)
                return
            raise kopf.TemporaryError(str(exc), delay=10) from exc

    def _write_endpoint_status(
        self, raw: dict[str, Any], prev: ModelEndpointStatus | None, obs: EndpointObservation
    ) -> None:
        new = compute_endpoint_status(prev, obs, _now())
        patch = status_patch(_known(ModelEndpointStatus, raw.get("status")), new)
        if patch:
            self.kube.patch_status(k.MODELENDPOINTS, raw["metadata"]["namespace"], raw["metadata"]["name"], patch)
        if prev is None or prev.phase != new.phase:
            self.kube.post_event(raw, "Warning" if new.phase == "Failed" else "Normal", new.phase,
                                 new.conditions[-1].message if new.conditions else new.phase)


def _hash(doc: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()[:16]


def _strip_meta(policy: dict[str, Any]) -> dict[str, Any]:
    doc = {key: policy[key] for key in ("apiVersion", "kind", "spec") if key in policy}
    doc["metadata"] = {"name": policy["metadata"]["name"]}
    return doc


def _phase_event(kube: k.Kube, raw: dict[str, Any], st: FineTuneJobStatus) -> None:
    """One Kubernetes Event per phase change."""
    warning = st.phase in (Phase.FAILED, Phase.REJECTED)
    kube.post_event(raw, "Warning" if warning else "Normal", str(st.phase), st.message)


class Resync:
    """Every `interval` seconds, reconcile each FineTuneJob that still has work (`needs_resync`) and
    each ModelEndpoint: catches anything a missed watch event would leave behind (a result file that
    appeared, a TTL that expired). One LIST per kind per namespace per interval."""

    def __init__(self, op: Operator, namespaces: list[str] | None, interval: float) -> None:
        self.op, self.namespaces, self.interval = op, list(namespaces or []), interval
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="graft-resync", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def _list(self, kind: k.Kind) -> list[dict[str, Any]]:
        if not self.namespaces or any(("*" in n or "?" in n) for n in self.namespaces):
            return self.op.kube.list(kind)  # cluster-wide (globs are matched by kopf's own watches)
        return [obj for ns in self.namespaces for obj in self.op.kube.list(kind, ns)]

    def once(self) -> None:
        for raw in self._list(k.FINETUNEJOBS):
            if not _shared_spec(raw) and needs_resync(raw.get("status")) and not raw["metadata"].get("deletionTimestamp"):
                self._guarded("FineTuneJob", self.op.reconcile_job, raw)
        for raw in self._list(k.MODELENDPOINTS):
            if not (raw.get("spec") or {}).get("cluster") and not raw["metadata"].get("deletionTimestamp"):
                self._guarded("ModelEndpoint", self.op.reconcile_endpoint, raw)

    def _guarded(self, kind: str, fn: Any, raw: dict[str, Any]) -> None:
        ref = f"{kind} {raw['metadata'].get('namespace')}/{raw['metadata']['name']}"
        try:
            fn(raw)
        except (ApiException, kopf.TemporaryError, kopf.PermanentError, ValueError, OSError) as exc:
            # One object's trouble never stops the loop; its handlers report it on the object.
            log.warning("resync of %s failed: %s", ref, exc)
            if METRICS is not None:
                METRICS.record_error(kind, exc)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.once()
            except ApiException as exc:
                log.warning("resync listing failed (retrying in %ss): %s", self.interval, exc)


def _shared_spec(raw: dict[str, Any]) -> bool:
    return bool(((raw.get("spec") or {}).get("runtime") or {}).get("cluster"))


# ==================================================================== kopf registry

def build_registry(op: Operator, namespaces: list[str] | None = None) -> kopf.OperatorRegistry:
    """All handlers, bound to `op`, in a fresh registry (no module-level state)."""
    reg = kopf.OperatorRegistry()
    settings = op.settings
    managed = {LABEL_MANAGED_BY: MANAGED_BY}

    @kopf.on.startup(registry=reg)
    def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
        settings.persistence.finalizer = f"{PREFIX}/finalizer"
        settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=PREFIX)
        settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
            prefix=PREFIX, key="last-handled-configuration"
        )
        settings.posting.level = logging.WARNING  # handler chatter stays in the log; phase Events are explicit
        settings.watching.server_timeout = 300
        settings.watching.client_timeout = 330
        settings.execution.max_workers = 16

    # The safety net is one resync loop, not a kopf timer per object: kopf puts a finalizer on every
    # object with a timer, and deleting a FineTuneJob must never wait for the operator (GC does it).
    resync = Resync(op, namespaces, settings.resync_seconds)

    @kopf.on.startup(id="resync", registry=reg)
    def start_resync(**_: Any) -> None:
        resync.start()

    @kopf.on.cleanup(registry=reg)
    def stop_resync(**_: Any) -> None:
        resync.stop()

    @kopf.on.login(registry=reg)
    def login(**kwargs: Any) -> Any:
        # An explicit --kubeconfig ($KUBECONFIG, read now) wins; else in-cluster, else the default kubeconfig.
        if os.environ.get("KUBECONFIG"):
            return kopf.login_with_kubeconfig(**kwargs)
        return kopf.login_via_client(**kwargs)

    @kopf.on.probe(id="api", registry=reg)
    def probe(**_: Any) -> str:
        return "ok"

    def _counted(kind: str, fn: Any, *args: Any, **kw: Any) -> None:
        if METRICS is None:
            fn(*args, **kw)
            return
        with METRICS.reconcile(kind):
            fn(*args, **kw)

    @kopf.on.resume(GROUP, VERSION, "finetunejobs", registry=reg)
    @kopf.on.create(GROUP, VERSION, "finetunejobs", registry=reg)
    @kopf.on.update(GROUP, VERSION, "finetunejobs", field="spec", registry=reg)
    def job_changed(body: kopf.Body, **_: Any) -> None:
        _counted("FineTuneJob", op.reconcile_job, copy.deepcopy(dict(body)), strict=True)


    @kopf.on.delete(GROUP, VERSION, "finetunejobs", optional=True, registry=reg)
    def job_deleted(namespace: str, name: str, **_: Any) -> None:
        if METRICS is not None:
            METRICS.forget_job(namespace, name)

    @kopf.on.event("ray.io", "v1", "rayjobs", labels=managed, registry=reg)
    def rayjob_event(body: kopf.Body, type: str | None, namespace: str, **_: Any) -> None:
        owner = (body.get("metadata", {}).get("labels") or {}).get(LABEL_JOB)
        if type == "DELETED" or not owner:
            return
        if not op.rayjob_changed(dict(body)):  # our own create/patch echoing back: nothing new to mirror
            return
        _counted("FineTuneJob", op.reconcile_job, {"metadata": {"namespace": namespace, "name": owner}})

    @kopf.on.resume(GROUP, VERSION, "modelendpoints", registry=reg)
    @kopf.on.create(GROUP, VERSION, "modelendpoints", registry=reg)
    @kopf.on.update(GROUP, VERSION, "modelendpoints", field="spec", registry=reg)
    def endpoint_changed(body: kopf.Body, **_: Any) -> None:
        _counted("ModelEndpoint", op.reconcile_endpoint, copy.deepcopy(dict(body)), strict=True)


    @kopf.on.event("ray.io", "v1", "rayservices", labels=managed, registry=reg)
    def rayservice_event(body: kopf.Body, type: str | None, namespace: str, **_: Any) -> None:
        owner = (body.get("metadata", {}).get("labels") or {}).get(LABEL_ENDPOINT)
        if type == "DELETED" or not owner:
            return
        _counted("ModelEndpoint", op.reconcile_endpoint, {"metadata": {"namespace": namespace, "name": owner}})

    # ---- shared Ray cluster (spec.runtime.cluster / spec.cluster): no child objects to watch, so poll;
    # a finalizer, because nothing in Kubernetes owns the Ray job or the Serve application.
    def _shared_job(spec: Any, **_: Any) -> bool:
        return bool(((spec or {}).get("runtime") or {}).get("cluster"))

    def _shared_endpoint(spec: Any, **_: Any) -> bool:
        return bool((spec or {}).get("cluster"))

    @kopf.timer(GROUP, VERSION, "finetunejobs", interval=settings.shared_poll_seconds,
                initial_delay=settings.shared_poll_seconds,
                when=lambda spec, status, **_: _shared_job(spec) and needs_resync(dict(status)), registry=reg)
    def shared_job_poll(body: kopf.Body, **_: Any) -> None:
        _counted("FineTuneJob", op.reconcile_job, copy.deepcopy(dict(body)))

    @kopf.on.delete(GROUP, VERSION, "finetunejobs", when=_shared_job, registry=reg)
    def shared_job_deleted(body: kopf.Body, retry: int, **_: Any) -> None:
        op.delete_shared_job(copy.deepcopy(dict(body)), retry)

    @kopf.timer(GROUP, VERSION, "modelendpoints", interval=settings.shared_poll_seconds,
                initial_delay=settings.shared_poll_seconds,
                when=lambda spec, status, **_: _shared_endpoint(spec) and (status or {}).get("phase") != "Ready",
                registry=reg)
    def shared_endpoint_poll(body: kopf.Body, **_: Any) -> None:
        _counted("ModelEndpoint", op.reconcile_endpoint, copy.deepcopy(dict(body)))

    @kopf.on.delete(GROUP, VERSION, "modelendpoints", when=_shared_endpoint, registry=reg)
    def shared_endpoint_deleted(body: kopf.Body, retry: int, **_: Any) -> None:
        op.delete_shared_endpoint(copy.deepcopy(dict(body)), retry)

    return reg


__all__ = ["ANNOTATION_MODEL_VERSION", "Operator", "build_registry", "parse_job"]
