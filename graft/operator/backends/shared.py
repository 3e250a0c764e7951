"""Shared-cluster backends: FineTuneJobs and ModelEndpoints on a long-lived Ray cluster.

`spec.runtime.cluster` (FineTuneJob) or `spec.cluster` (ModelEndpoint) names a KubeRay RayCluster
in the object's namespace or gives a Ray dashboard address. Training goes through Ray's Job
Submission API: submit once per attempt, stop on suspend, re-submit (next attempt) on resume,
stop and forget on deletion, copy the log next to the result when the job ends. Serving goes
through Serve's REST API. Nothing in Kubernetes owns this work, so the loop keeps a finalizer on
these objects and polls them (`POLL` seconds) instead of watching a child.
"""

from __future__ import annotations

import dataclasses
import logging

from graft import storage
from graft.api.endpoint import ModelEndpoint
from graft.api.spec import FineTuneJob
from graft.api.status import FineTuneJobStatus, Phase
from graft.operator.backends.base import Event, RunObservation, RunState, ServeObservation, Step
from graft.operator.builders.rayjob import job_result_uri
from graft.operator.result import ResultSource
from graft.operator.settings import OperatorSettings
from graft.operator.shared.jobs import ClusterUnavailable, JobInfo, RayJobs, as_run, build_submission, error_summary
from graft.operator.shared.naming import app_name, attempt_of, dashboard_url, route_prefix, serve_url, submission_id
from graft.operator.shared.serve import ServeApi, as_serve, build_application, http_port
from graft.operator.storage import remove_experiment

log = logging.getLogger("graft.operator.shared")
LOG_FILE = "train.log"
JOB_LOG_FILE = "job.log"
MAX_LOG_BYTES = 16 * 1024 * 1024  # the copy next to the result keeps the last 16 MiB


def _uid(obj: FineTuneJob | ModelEndpoint) -> str:
    return str((obj.metadata.model_extra or {}).get("uid") or "")


def _beside_result(job: FineTuneJob, settings: OperatorSettings, name: str) -> str | None:
    result = job_result_uri(job, settings)
    return result.rsplit("/", 1)[0] + "/" + name if result else None


def log_uri(job: FineTuneJob, settings: OperatorSettings) -> str | None:
    """`<job dir>/train.log`, next to result.json (None without storage)."""
    return _beside_result(job, settings, LOG_FILE)


def job_log_uri(job: FineTuneJob, settings: OperatorSettings) -> str | None:
    """`<job dir>/job.log`, which graft.jobs itself keeps on the job's storage (graft.jobs.joblog)."""
    return _beside_result(job, settings, JOB_LOG_FILE)


def persist_log(job: FineTuneJob, text: str, settings: OperatorSettings) -> str | None:
    """Copy a finished job's log next to its result so it outlives the Ray cluster (`graft logs`
    reads it from status.logUri); None when there is no storage, no log, or the copy failed."""
    uri = log_uri(job, settings)
    if uri is None or not text:
        return None
    try:
        fs, path = storage.fsspec_filesystem(uri)  # s3:// through pyarrow (graft[s3]), no s3fs
        if storage.is_remote(uri):
            fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
        else:
            storage.ensure_dir(storage.local_path(uri).parent)
        with fs.open(path, "w") as fh:
            fh.write(text[-MAX_LOG_BYTES:])
    except (OSError, ImportError, ValueError) as exc:
        log.warning("cannot copy the log of %s/%s to %s: %s", job.metadata.namespace, job.metadata.name, uri, exc)
        return None
    return uri


class SharedJobBackend:
    def __init__(self, settings: OperatorSettings) -> None:
        self.settings = settings

    def dashboard(self, job: FineTuneJob) -> str:
        if job.spec.runtime.cluster is None:
            raise ValueError("SharedJobBackend needs spec.runtime.cluster")
        return dashboard_url(job.spec.runtime.cluster, job.metadata.namespace or "", self.settings)

    def _sid(self, job: FineTuneJob, status: FineTuneJobStatus | None) -> tuple[str, int]:
        ns, name, uid = job.metadata.namespace or "", job.metadata.name, _uid(job)
        attempt = attempt_of(status.job_submission_id if status else None, ns, name, uid) or 0
        return submission_id(ns, name, uid, attempt), attempt

    def _info(self, job: FineTuneJob, status: FineTuneJobStatus | None) -> JobInfo | None:
        return RayJobs(self.dashboard(job)).info(self._sid(job, status)[0])

    def observe(self, job: FineTuneJob, status: FineTuneJobStatus | None) -> RunObservation:
        sid, _ = self._sid(job, status)
        return as_run(self._info(job, status), suspend=job.spec.suspend, dashboard=self.dashboard(job), submission=sid)

    def starts_work(self, job: FineTuneJob, status: FineTuneJobStatus | None, obs: RunObservation) -> bool:
        if job.spec.suspend:
            return False
        resuming = obs.state == RunState.SUSPENDED or (status is not None and status.phase == Phase.SUSPENDED)
        return obs.state == RunState.ABSENT and not self._lost(status, obs) or resuming

    @staticmethod
    def _lost(status: FineTuneJobStatus | None, obs: RunObservation) -> bool:
        """It ran and vanished: the cluster lost it (a restart)."""
        return (obs.state == RunState.ABSENT and status is not None and status.job_submission_id == obs.submission_id
                and bool(status.start_time))

    def act(self, job: FineTuneJob, status: FineTuneJobStatus | None, obs: RunObservation) -> Step:
        cluster = job.spec.runtime.cluster
        dashboard, api = self.dashboard(job), RayJobs(self.dashboard(job))
        ns, name, uid = job.metadata.namespace or "", job.metadata.name, _uid(job)
        sid, attempt = self._sid(job, status)
        info = api.info(sid)
        events: list[Event] = []
        cluster_name = cluster.name if cluster else None
        if self._lost(status, obs):
            lost = JobInfo(sid, "FAILED", f"Ray job {sid} no longer exists on {dashboard} (was the cluster restarted?); "
                                          "delete and re-create the FineTuneJob to run it again")
            return Step(as_run(lost, suspend=False, dashboard=dashboard, submission=sid, cluster_name=cluster_name))
        if job.spec.suspend and info is not None and not info.terminal:
            if api.stop(sid):
                events.append(Event("Normal", "Stopping", f"Ray job {sid} is being stopped (spec.suspend)"))
        elif not job.spec.suspend and (info is None or (info.status == "STOPPED" and status is not None
                                                        and status.phase == Phase.SUSPENDED)):
            if info is not None:
                sid = submission_id(ns, name, uid, attempt + 1)  # Ray never reuses a submission id
            api.submit(build_submission(job, self.settings, sid))
            events.append(Event("Normal", "Submitted", f"Ray job {sid} submitted to {dashboard}"))
            info = api.info(sid)
        # Resumed while the stop asked for by the suspension is still under way: stay Suspended until the
        # Ray job has stopped (the next look re-submits it), instead of reading the stop as a failure.
        stopping = (not job.spec.suspend and not events and status is not None and status.phase == Phase.SUSPENDED
                    and info is not None and not info.terminal)
        error = copied = None
        # A stop asked for by spec.suspend does not end the job: the log is copied when its last attempt
        # ends (a copy made now would stand in for that attempt's log, see _persist_log).
        suspended = job.spec.suspend and info is not None and info.status == "STOPPED"
        if info is not None and info.terminal and not suspended:
            text = api.logs(sid) or ""
            if info.status == "FAILED":
                error = error_summary(text) or info.message
            copied = self._persist_log(job, text, status)
        run = as_run(info, suspend=job.spec.suspend or stopping, dashboard=dashboard, submission=sid,
                     cluster_name=cluster_name, error=error, log_uri=copied)
        return Step(run, events, requeue_after=None if info is not None and info.terminal else self.settings.shared_poll_seconds)

    def _persist_log(self, job: FineTuneJob, text: str, status: FineTuneJobStatus | None) -> str | None:
        if status is not None and status.log_uri == log_uri(job, self.settings):
            return status.log_uri
        return persist_log(job, text, self.settings)

    def result_source(self, job: FineTuneJob, obs: RunObservation) -> ResultSource:
        return ResultSource(uri=job_result_uri(job, self.settings), dashboard_url=obs.dashboard_url, job_id=obs.submission_id)

    def collect(self, job: FineTuneJob, status: FineTuneJobStatus) -> bool:
        remove_experiment(job, self.settings)  # checkpoints go; result, log and model stay
        return True  # the Ray job record is kept (for `graft logs`) until the FineTuneJob is deleted

    def cleanup(self, job: FineTuneJob, status: FineTuneJobStatus | None) -> bool:
        """Stop the job's Ray job, then forget every attempt. True once a pass finds no record left.

        A deleted record is confirmed gone on a later pass, not trusted at once: Ray's job monitor
        can write a stopped job's record back after the delete (it sees the supervisor actor die,
        finds no status, and stores FAILED), and that copy must be deleted too."""
        ns, name, uid = job.metadata.namespace or "", job.metadata.name, _uid(job)
        api = RayJobs(self.dashboard(job))
        _, attempt = self._sid(job, status)
        done = True
        for n in range(attempt + 1):
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
            done = False  # confirmed on the next pass
        return done


class SharedServeBackend:
    def __init__(self, settings: OperatorSettings) -> None:
        self.settings = settings

    def _dashboard(self, endpoint: ModelEndpoint) -> str:
        if endpoint.spec.cluster is None:
            raise ValueError("SharedServeBackend needs spec.cluster")
        return dashboard_url(endpoint.spec.cluster, endpoint.metadata.namespace or "", self.settings)

    def apply(self, endpoint: ModelEndpoint) -> ServeObservation:
        ns, name = endpoint.metadata.namespace or "", endpoint.metadata.name
        api = ServeApi(self._dashboard(endpoint))
        desired = build_application(endpoint, self.settings)
        deployed, _ = api.apply(desired, default_port=self.settings.serve_port)
        app, details = api.application(desired["name"])
        url = serve_url(api.dashboard, http_port(details, self.settings.serve_port), route_prefix(ns, name))
        obs = as_serve(app, desired["name"], url)
        if not deployed:
            return obs
        log.info("deployed Serve application %s (model version %s)", desired["name"], endpoint.spec.model.version)
        message = f"Serve application {desired['name']} set to model version {endpoint.spec.model.version} ({endpoint.spec.model.uri})"
        return dataclasses.replace(obs, events=(Event("Normal", "Deploying", message),))

    def url(self, namespace: str, name: str, cluster_dashboard: str | None) -> str:
        """The URL an endpoint answers on (Serve's port when it runs, else the configured one)."""
        if cluster_dashboard is None:
            raise ValueError("a shared-cluster endpoint URL needs the cluster's dashboard")
        try:
            port = http_port(ServeApi(cluster_dashboard).details(), self.settings.serve_port)
        except ClusterUnavailable:
            port = self.settings.serve_port
        return serve_url(cluster_dashboard, port, route_prefix(namespace, name))

    def cleanup(self, endpoint: ModelEndpoint) -> bool:
        ns, name = endpoint.metadata.namespace or "", endpoint.metadata.name
        if ServeApi(self._dashboard(endpoint)).remove(app_name(ns, name)):
            log.info("removed Serve application %s", app_name(ns, name))
        return True
