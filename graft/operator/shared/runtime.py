"""What the kopf handlers call for objects on a shared Ray cluster: observe (and act), clean up.

FineTuneJob: submit once per attempt, stop on suspend, re-submit (next attempt) on resume, stop
and forget the Ray job when the FineTuneJob is deleted, copy the log next to the result when the
job ends. ModelEndpoint: keep its Serve application at the promoted model, remove it on delete.
Status itself is computed by `graft.operator.reconcile` from the observations returned here.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import fsspec

from graft.api.endpoint import ModelEndpoint
from graft.api.spec import FineTuneJob
from graft.api.status import FineTuneJobStatus, Phase
from graft.operator.builders.rayjob import job_result_uri
from graft.operator.settings import OperatorSettings
from graft.operator.shared.jobs import ClusterUnavailable, JobInfo, RayJobs, as_rayjob, build_submission, error_summary
from graft.operator.shared.naming import app_name, attempt_of, dashboard_url, route_prefix, serve_url, submission_id
from graft.operator.shared.serve import ServeApi, as_rayservice, build_application, http_port

log = logging.getLogger("graft.operator.shared")
LOG_FILE = "train.log"


@dataclass(frozen=True)
class JobView:
    """One look at a FineTuneJob's Ray job, after acting on it."""

    submission_id: str
    dashboard: str
    ray_job: dict[str, Any] | None  # RayJob-shaped, for compute_status
    info: JobInfo | None
    submitted: bool = False  # submitted by this call
    stopped: bool = False  # a stop was requested by this call
    log_uri: str | None = None  # where the finished job's log was copied


@dataclass(frozen=True)
class EndpointView:
    application: str
    url: str
    ray_service: dict[str, Any]  # RayService-shaped, for compute_endpoint_status
    deployed: bool  # a PUT was sent by this call


def _uid(obj: FineTuneJob | ModelEndpoint) -> str:
    return str((obj.metadata.model_extra or {}).get("uid") or "")


def log_uri(job: FineTuneJob, settings: OperatorSettings) -> str | None:
    """`<storage>/<name>-<uid8>/train.log`, next to result.json (None without storage)."""
    result = job_result_uri(job, settings)
    return result.rsplit("/", 1)[0] + "/" + LOG_FILE if result else None


class SharedRuntime:
    def __init__(self, settings: OperatorSettings) -> None:
        self.settings = settings

    # ------------------------------------------------------------------ FineTuneJob
    def job_dashboard(self, job: FineTuneJob) -> str:
        assert job.spec.runtime.cluster is not None
        return dashboard_url(job.spec.runtime.cluster, job.metadata.namespace or "", self.settings)

    def observe_job(self, job: FineTuneJob, prev: FineTuneJobStatus | None) -> JobView:
        """Submit, stop or re-submit as the spec asks; return what the Ray job looks like now."""
        cluster = job.spec.runtime.cluster
        assert cluster is not None
        ns, name, uid = job.metadata.namespace or "", job.metadata.name, _uid(job)
        dashboard = self.job_dashboard(job)
        api = RayJobs(dashboard)
        attempt = attempt_of(prev.job_submission_id if prev else None, ns, name, uid) or 0
        sid = submission_id(ns, name, uid, attempt)
        info = api.info(sid)
        submitted = stopped = False
        if info is None and prev is not None and prev.job_submission_id == sid and prev.start_time:
            # It ran and vanished: the cluster lost it (restart). Say so instead of silently re-running.
            lost = JobInfo(sid, "FAILED", f"Ray job {sid} no longer exists on {dashboard} (was the cluster restarted?); "
                                          "delete and re-create the FineTuneJob to run it again")
            return JobView(sid, dashboard, as_rayjob(lost, suspend=False, dashboard=dashboard, submission=sid,
                                                     cluster_name=cluster.name), lost)
        if job.spec.suspend:
            if info is not None and not info.terminal:
                stopped = api.stop(sid)
                log.info("stopping Ray job %s (spec.suspend)", sid)
        elif info is None:
            api.submit(build_submission(job, self.settings, sid))
            submitted = True
            log.info("submitted Ray job %s to %s", sid, dashboard)
            info = api.info(sid)
        elif info.status == "STOPPED" and prev is not None and prev.phase == Phase.SUSPENDED:
            sid = submission_id(ns, name, uid, attempt + 1)  # Ray never reuses a submission id
            api.submit(build_submission(job, self.settings, sid))
            submitted = True
            log.info("resumed: submitted Ray job %s to %s", sid, dashboard)
            info = api.info(sid)
        # Resumed while the stop asked for by the suspension is still under way: stay Suspended until
        # the Ray job has stopped (the next look re-submits it), instead of reading the stop as a failure.
        stopping = (not job.spec.suspend and not submitted and prev is not None and prev.phase == Phase.SUSPENDED
                    and info is not None and not info.terminal)
        error = None
        copied = None
        if info is not None and info.terminal:
            text = api.logs(sid) or ""
            if info.status == "FAILED":
                error = error_summary(text) or info.message
            copied = self._persist_log(job, text, prev)
        ray_job = as_rayjob(info, suspend=job.spec.suspend or stopping, dashboard=dashboard, submission=sid,
                            cluster_name=cluster.name, error=error)
        return JobView(sid, dashboard, ray_job, info, submitted=submitted, stopped=stopped, log_uri=copied)

    def _persist_log(self, job: FineTuneJob, text: str, prev: FineTuneJobStatus | None) -> str | None:
        """Copy the finished job's log next to its result, once, so it outlives the Ray cluster."""
        uri = log_uri(job, self.settings)
        if uri is None or not text:
            return None
        if prev is not None and prev.log_uri == uri:
            return uri
        try:
            fs, path = fsspec.core.url_to_fs(uri)
            fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
            with fs.open(path, "w") as fh:
                fh.write(text)
        except OSError as exc:
            log.warning("cannot copy the log of %s/%s to %s: %s", job.metadata.namespace, job.metadata.name, uri, exc)
            return None
        return uri

    def cleanup_job(self, job: FineTuneJob, status: FineTuneJobStatus | None) -> bool:
        """On FineTuneJob deletion: stop its Ray job, then forget it. True once nothing runs."""
        ns, name, uid = job.metadata.namespace or "", job.metadata.name, _uid(job)
        api = RayJobs(self.job_dashboard(job))
        attempt = attempt_of(status.job_submission_id if status else None, ns, name, uid) or 0
        done = True
        for n in range(attempt + 1):  # earlier attempts are stopped already; forget them too
            sid = submission_id(ns, name, uid, n)
            info = api.info(sid)
            if info is None:
                continue
            if not info.terminal:
                api.stop(sid)
                log.info("stopping Ray job %s: its FineTuneJob is being deleted", sid)
                done = False
                continue
            api.delete(sid)
        return done

    def job_logs(self, dashboard: str, sid: str) -> str | None:
        return RayJobs(dashboard).logs(sid)

    # ------------------------------------------------------------------ ModelEndpoint
    def endpoint_dashboard(self, endpoint: ModelEndpoint) -> str:
        assert endpoint.spec.cluster is not None
        return dashboard_url(endpoint.spec.cluster, endpoint.metadata.namespace or "", self.settings)

    def observe_endpoint(self, endpoint: ModelEndpoint) -> EndpointView:
        """Keep the endpoint's Serve application at its spec (PUT when it differs); its state now."""
        ns, name = endpoint.metadata.namespace or "", endpoint.metadata.name
        api = ServeApi(self.endpoint_dashboard(endpoint))
        desired = build_application(endpoint, self.settings)
        deployed, _ = api.apply(desired, default_port=self.settings.serve_port)
        if deployed:
            log.info("deployed Serve application %s (model version %s)", desired["name"], endpoint.spec.model.version)
        app, details = api.application(desired["name"])
        url = serve_url(api.dashboard, http_port(details, self.settings.serve_port), route_prefix(ns, name))
        return EndpointView(application=desired["name"], url=url, ray_service=as_rayservice(app), deployed=deployed)

    def remove_endpoint(self, endpoint: ModelEndpoint) -> bool:
        ns, name = endpoint.metadata.namespace or "", endpoint.metadata.name
        removed = ServeApi(self.endpoint_dashboard(endpoint)).remove(app_name(ns, name))
        if removed:
            log.info("removed Serve application %s", app_name(ns, name))
        return removed

    def endpoint_url(self, cluster_dashboard: str, namespace: str, name: str) -> str:
        """The URL an endpoint answers on (Serve's port when it runs, else the configured one)."""
        try:
            port = http_port(ServeApi(cluster_dashboard).details(), self.settings.serve_port)
        except ClusterUnavailable:
            port = self.settings.serve_port
        return serve_url(cluster_dashboard, port, route_prefix(namespace, name))


__all__ = ["ClusterUnavailable", "EndpointView", "JobView", "SharedRuntime", "log_uri"]
