"""KubeRay backends: a RayJob per FineTuneJob, a RayService per ModelEndpoint.

Reads come from the watch-fed `Store` (no GET per reconcile); writes are the child's create, a
suspend patch, the RayService update on promotion, and the TTL delete. Both children are owned by
their Graft object, so Kubernetes garbage collection deletes them with it (no finalizer).

KubeRay RayJob status (`jobDeploymentStatus` x `jobStatus`) -> RunState:

| jobDeploymentStatus                    | jobStatus          | state                        |
|----------------------------------------|--------------------|------------------------------|
| (none), New, Initializing, Waiting     | any                | Pending                      |
| Running                                | RUNNING / PENDING  | Running / Pending            |
| Retrying                               | any                | Running (retried, backoffLimit) |
| Suspending, Suspended                  | any                | Suspended (Pending while Kueue holds it) |
| Complete                               | SUCCEEDED          | Succeeded                    |
| Complete                               | FAILED, STOPPED    | Failed                       |
| Failed, ValidationFailed               | any                | Failed (KubeRay's reason)    |
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
from typing import Any

from graft.api.endpoint import ModelEndpoint
from graft.api.spec import FineTuneJob
from graft.api.status import FineTuneJobStatus
from graft.operator import kube as k
from graft.operator.backends.base import Event, RunObservation, RunState, ServeObservation, Step
from graft.operator.backends.pods import CLUSTER_LABEL, pod_problem
from graft.operator.backends.shared import job_log_uri, persist_log
from graft.operator.builders import build_rayjob, build_rayservice
from graft.operator.builders.netpol import ray_network_policy
from graft.operator.builders.rayjob import job_result_uri
from graft.operator.builders.statekey import state_key_secret
from graft.operator.cache import Store
from graft.operator.names import (
    ANNOTATION_MODEL_VERSION,
    ANNOTATION_SPEC_HASH,
    LABEL_MANAGED_BY,
    endpoint_labels,
    job_labels,
    owner_reference,
    ray_name,
    rayservice_url,
)
from graft.operator.policy import apply_kueue
from graft.operator.rayauth import auth_secret, cluster_token
from graft.operator.result import ResultSource
from graft.operator.settings import OperatorSettings
from graft.operator.shared.jobs import ClusterUnavailable, RayJobs
from graft.operator.storage import ensure_namespace_part, remove_experiment

log = logging.getLogger("graft.operator")
LOG_TIMEOUT = 5.0  # seconds for the one read of a finished job's log


def observe_rayjob(rayjob: dict[str, Any] | None, suspend: bool, queue: str | None = None) -> RunObservation:
    """The RunObservation of a RayJob object (None: there is none)."""
    if rayjob is None:
        return RunObservation(RunState.ABSENT)
    st = rayjob.get("status") or {}
    deploy, job, message = st.get("jobDeploymentStatus") or "", st.get("jobStatus") or "", st.get("message") or ""
    held = bool((rayjob.get("spec") or {}).get("suspend"))
    if deploy in ("Failed", "ValidationFailed"):
        reason = st.get("reason") or ("ValidationFailed" if deploy == "ValidationFailed" else "RayJobFailed")
        state, message = RunState.FAILED, message or f"the RayJob ended {deploy}"
    elif deploy == "Complete" and job == "SUCCEEDED":
        state, reason, message = RunState.SUCCEEDED, "ReadingResult", "the Ray job succeeded; reading its result"
    elif deploy == "Complete":
        state, reason = RunState.FAILED, f"Job{job.capitalize() or 'Failed'}"
        message = message or f"the Ray job ended {job or 'without a status'}"
    elif queue and held and not suspend and deploy in ("", "New", "Suspended"):
        state, reason, message = RunState.PENDING, "QueuedByKueue", f"waiting for Kueue to admit the job (LocalQueue {queue})"
    elif deploy in ("Suspending", "Suspended") or (held and deploy in ("", "New")):
        state, reason = RunState.SUSPENDED, f"RayJob{deploy or 'Suspended'}"
        message = message or "the Ray cluster is deleted while spec.suspend is true"
    elif deploy == "Retrying":
        state, reason = RunState.RUNNING, "Retrying"
        message = message or "the Ray job failed and is retried on a new cluster (spec.runtime.backoffLimit)"
    elif deploy == "Running" and job == "RUNNING":
        state, reason, message = RunState.RUNNING, "JobRunning", "the Ray job is running"
    elif deploy == "Running":
        state, reason = RunState.PENDING, "JobPending"
        message = message or "the Ray cluster is up; the Ray job is being submitted"
    elif deploy == "Initializing":
        state, reason, message = RunState.PENDING, "RayClusterInitializing", "the Ray cluster is starting"
    else:
        state, reason = RunState.PENDING, "WaitingForRayJob"
        message = "the RayJob is created; waiting for KubeRay to start its Ray cluster"
    return RunObservation(
        state, reason, message, ray_job_name=(rayjob.get("metadata") or {}).get("name"),
        cluster_name=st.get("rayClusterName"), submission_id=st.get("jobId"), dashboard_url=st.get("dashboardURL"),
        start_time=st.get("startTime"), end_time=st.get("endTime"),
    )


def ensure_network_policy(kube: k.Kube, settings: OperatorSettings, owner: dict[str, object], namespace: str,
                          labels: dict[str, str], *, serve_port: int | None = None, submitter: bool = False) -> None:
    """Create the NetworkPolicy of the Ray cluster of `owner` (graft.operator.builders.netpol) unless
    the operator was given no peers to admit (settings.ray_ingress_from) or it exists."""
    if settings.ray_ingress_from is None:
        return
    name = str(owner["name"])
    selector = {key: v for key, v in labels.items() if key != LABEL_MANAGED_BY}  # the owner's own label
    body = ray_network_policy(namespace=namespace, ray_name=ray_name(name), owner=owner, labels=labels,
                              pod_selector=selector, peers=settings.ray_ingress_from, serve_port=serve_port,
                              submitter=submitter)
    if kube.create_network_policy(body):
        log.info("created the NetworkPolicy of the Ray cluster of %s/%s", namespace, name)


def ensure_auth_secret(kube: k.Kube, settings: OperatorSettings, owner: dict[str, object], namespace: str,
                       labels: dict[str, str]) -> None:
    """Create the Ray token Secret of the RayJob/RayService of `owner` (an ownerReference) unless it
    exists; the token is re-derived, never read back (graft.operator.rayauth)."""
    name, uid = str(owner["name"]), str(owner["uid"])
    token = cluster_token(settings.ray_auth_key_file, namespace, name, uid)
    if kube.create_secret(auth_secret(namespace=namespace, ray_name=ray_name(name), token=token, labels=labels, owner=owner)):
        log.info("created the Ray token Secret of %s/%s", namespace, name)


class RayJobBackend:
    def __init__(self, kube: k.Kube, store: Store, settings: OperatorSettings) -> None:
        self.kube, self.store, self.settings = kube, store, settings

    def _rayjob(self, job: FineTuneJob) -> dict[str, Any] | None:
        return self.store.get(k.RAYJOBS, job.metadata.namespace or "", ray_name(job.metadata.name))

    def observe(self, job: FineTuneJob, status: FineTuneJobStatus | None) -> RunObservation:
        return observe_rayjob(self._rayjob(job), job.spec.suspend, job.spec.runtime.queue_name)

    def starts_work(self, job: FineTuneJob, status: FineTuneJobStatus | None, obs: RunObservation) -> bool:
        rj = self._rayjob(job)
        if rj is None:
            return True  # create, or re-create a RayJob that went missing
        held = bool((rj.get("spec") or {}).get("suspend"))
        return held and not job.spec.suspend and not job.spec.runtime.queue_name

    def act(self, job: FineTuneJob, status: FineTuneJobStatus | None, obs: RunObservation) -> Step:
        rj = self._rayjob(job)
        queue = job.spec.runtime.queue_name
        if rj is None:
            ns, name = job.metadata.namespace or "", job.metadata.name
            owner = owner_reference(job.api_version, job.kind, name, job.metadata.uid_or_empty())
            ensure_auth_secret(self.kube, self.settings, owner, ns, job_labels(name))
            ensure_network_policy(self.kube, self.settings, owner, ns, job_labels(name), submitter=True)
            ensure_namespace_part(job.metadata.namespace or "", self.settings)
            # A new state key per RayJob (graft.api.statekey): a re-created RayJob's attempt restores nothing.
            key_secret = self.kube.create_generated_secret(state_key_secret(job))
            rj, created = self.kube.create(k.RAYJOBS, apply_kueue(build_rayjob(job, self.settings, key_secret), job))
            self.store.put(k.RAYJOBS, rj)
            if created:
                log.info("created RayJob %s/%s", job.metadata.namespace, rj["metadata"]["name"])
        held = bool((rj.get("spec") or {}).get("suspend"))
        want = job.spec.suspend
        # A queued RayJob belongs to Kueue once created: Graft may hold it, never release it.
        if held != want and (want or not queue):
            md = rj["metadata"]
            rj = self.store.put(k.RAYJOBS, self.kube.patch(k.RAYJOBS, md["namespace"], md["name"], {"spec": {"suspend": want}}))
        run = observe_rayjob(rj, want, queue)
        if run.state in (RunState.PENDING, RunState.RUNNING) and run.cluster_name:
            problem = pod_problem(self.store.labelled(k.PODS, rj["metadata"]["namespace"], CLUSTER_LABEL, run.cluster_name))
            if problem is not None:
                # Nothing would change without a spec edit (the spec is immutable): stop the cluster now.
                log.warning("FineTuneJob %s/%s: %s", job.metadata.namespace, job.metadata.name, problem.message)
                self.kube.delete(k.RAYJOBS, rj["metadata"]["namespace"], rj["metadata"]["name"])
                return Step(dataclasses.replace(run, state=RunState.FAILED, reason=problem.reason, message=problem.message))
        if run.state in (RunState.SUCCEEDED, RunState.FAILED) and (status is None or not status.log_uri):
            # The driver's whole log through the dashboard; else the job's own log on its storage.
            run = dataclasses.replace(run, log_uri=self._copy_log(job, run) or job_log_uri(job, self.settings))
        return Step(run)

    def _copy_log(self, job: FineTuneJob, run: RunObservation) -> str | None:
        """Once, when the Ray job ends: its driver log, through the dashboard, next to the result."""
        if not run.dashboard_url or not run.submission_id:
            return None
        base = run.dashboard_url if "://" in run.dashboard_url else f"http://{run.dashboard_url}"
        ns, name = job.metadata.namespace or "", job.metadata.name
        token = cluster_token(self.settings.ray_auth_key_file, ns, name, job.metadata.uid_or_empty())
        try:
            text = RayJobs(base, timeout=LOG_TIMEOUT, token=token).logs(run.submission_id)
        except ClusterUnavailable as exc:
            log.warning("the log of %s/%s is not kept: %s", job.metadata.namespace, job.metadata.name, exc)
            return None
        return persist_log(job, text or "", self.settings)

    def result_source(self, job: FineTuneJob, obs: RunObservation) -> ResultSource:
        return ResultSource(uri=job_result_uri(job, self.settings), dashboard_url=obs.dashboard_url, job_id=obs.submission_id)

    def collect(self, job: FineTuneJob, status: FineTuneJobStatus) -> bool:
        if status.ray_job_name:
            self.kube.delete(k.RAYJOBS, job.metadata.namespace or "", status.ray_job_name)
        remove_experiment(job, self.settings)
        return True

    def cleanup(self, job: FineTuneJob, status: FineTuneJobStatus | None) -> bool:
        return True  # garbage collection deletes the RayJob with its owner


def _hash(doc: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()[:16]


def observe_rayservice(rs: dict[str, Any] | None, application: str, url: str) -> ServeObservation:
    if rs is None:
        return ServeObservation(exists=False, reason="CreatingRayService", message="creating the RayService", application=application)
    rst = rs.get("status") or {}
    app = ((rst.get("activeServiceStatus") or {}).get("applicationStatuses") or {}).get(application) or {}
    ready_cond = next((c for c in rst.get("conditions") or [] if c.get("type") == "Ready"), None) or {}
    ready = rst.get("serviceStatus") == "Running" or ready_cond.get("status") == "True"
    meta = rs.get("metadata") or {}
    version = (meta.get("annotations") or {}).get(ANNOTATION_MODEL_VERSION)
    app_status = app.get("status") or ""
    current = meta.get("generation") is not None and rst.get("observedGeneration") == meta.get("generation")
    served = int(version) if ready and app_status == "RUNNING" and current and version else None
    return ServeObservation(
        exists=True, ready=ready, app_status=app_status, reason=ready_cond.get("reason") or "",
        message=app.get("message") or ready_cond.get("message") or "", replicas=int(rst.get("numServeEndpoints") or 0),
        served_version=served, url=url, ray_service_name=meta.get("name"), application=application,
    )


class RayServiceBackend:
    def __init__(self, kube: k.Kube, store: Store, settings: OperatorSettings) -> None:
        self.kube, self.store, self.settings = kube, store, settings

    def url(self, namespace: str, name: str, cluster_dashboard: str | None) -> str:
        return rayservice_url(ray_name(name), namespace, self.settings.serve_port)

    def apply(self, endpoint: ModelEndpoint) -> ServeObservation:
        ns, name = endpoint.metadata.namespace or "", endpoint.metadata.name
        desired = build_rayservice(endpoint, self.settings)
        desired["metadata"]["annotations"][ANNOTATION_SPEC_HASH] = _hash(desired["spec"])
        rs = self.store.get(k.RAYSERVICES, ns, desired["metadata"]["name"])
        events: tuple[Event, ...] = ()
        if rs is None or (rs["metadata"].get("annotations") or {}).get(ANNOTATION_SPEC_HASH) != desired["metadata"]["annotations"][ANNOTATION_SPEC_HASH]:
            # Also before an update: a RayService created before token authentication gains it then.
            ensure_auth_secret(self.kube, self.settings, desired["metadata"]["ownerReferences"][0], ns, endpoint_labels(name))
            ensure_network_policy(self.kube, self.settings, desired["metadata"]["ownerReferences"][0], ns,
                                  endpoint_labels(name), serve_port=self.settings.serve_port)
        if rs is None:
            ensure_namespace_part(ns, self.settings)
            rs, _ = self.kube.create(k.RAYSERVICES, desired)
            self.store.put(k.RAYSERVICES, rs)
        elif (rs["metadata"].get("annotations") or {}).get(ANNOTATION_SPEC_HASH) != desired["metadata"]["annotations"][ANNOTATION_SPEC_HASH]:
            rs = self.store.put(k.RAYSERVICES, self.kube.patch(k.RAYSERVICES, ns, desired["metadata"]["name"], {
                "metadata": {"annotations": desired["metadata"]["annotations"]}, "spec": desired["spec"],
            }))
            message = f"RayService updated to model version {endpoint.spec.model.version} ({endpoint.spec.model.uri})"
            events = (Event("Normal", "Deploying", message),)
        obs = observe_rayservice(rs, name, self.url(ns, name, None))
        return dataclasses.replace(obs, events=events)

    def cleanup(self, endpoint: ModelEndpoint) -> bool:
        return True  # garbage collection deletes the RayService with its owner
