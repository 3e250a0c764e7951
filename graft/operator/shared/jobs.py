"""Training on a shared Ray cluster through Ray's Job Submission API.

Submission uses `ray.job_submission.JobSubmissionClient` (it uploads the spec as the job's
`working_dir` package); status, logs, stop and delete use the same REST endpoints directly with
timeouts, so a slow dashboard never blocks an operator thread for good.

The job's Ray status becomes a typed `RunObservation` (`as_run`), as a RayJob's does.
"""

from __future__ import annotations

import re
import shlex
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import yaml

from graft.api.argcodec import encode_arg
from graft.api.spec import FineTuneJob
from graft.operator.backends.base import RunObservation, RunState
from graft.operator.bounded import MAX_LOG_BYTES, get_json
from graft.operator.builders.rayjob import job_result_uri, runtime_env, spec_document
from graft.operator.rayauth import auth_headers
from graft.operator.settings import OperatorSettings

SPEC_FILE = "finetunejob.yaml"
LOCAL_RESULT = "result.json"  # in the job's working dir when no storage is configured
TERMINAL = ("SUCCEEDED", "FAILED", "STOPPED")
META_NAMESPACE = "graft.dev/namespace"
META_NAME = "graft.dev/finetunejob"
META_UID = "graft.dev/uid"


class ClusterUnavailable(RuntimeError):
    """The shared cluster's dashboard could not be reached or refused a request; says which and why."""


class UnexpectedAnswer(ClusterUnavailable):
    """The dashboard answered, but not in the shape Ray's API has (a list or a number where an object
    belongs, text where a time belongs): the cluster is treated as unusable, retried, never a crash."""


def json_object(resp: httpx.Response, what: str) -> dict[str, Any]:
    """The JSON object of a dashboard's answer; UnexpectedAnswer (naming `what`) for anything else."""
    try:
        doc = resp.json()
    except ValueError as exc:  # json.JSONDecodeError
        raise UnexpectedAnswer(f"{what}: the answer is not JSON ({exc})") from exc
    if not isinstance(doc, dict):
        raise UnexpectedAnswer(f"{what}: expected a JSON object, got {type(doc).__name__} {str(doc)[:100]!r}")
    return doc


@dataclass(frozen=True)
class JobInfo:
    """What the Job Submission API reports about one job."""

    submission_id: str
    status: str  # PENDING, RUNNING, SUCCEEDED, FAILED, STOPPED
    message: str = ""
    start_time_ms: int | None = None
    end_time_ms: int | None = None

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL


@dataclass(frozen=True)
class Submission:
    """Everything `submit_job` receives for a FineTuneJob (pure, built from spec and settings)."""

    submission_id: str
    entrypoint: str
    env_vars: dict[str, str]
    spec_yaml: str
    metadata: dict[str, str]
    entrypoint_num_cpus: float = 0.0
    entrypoint_num_gpus: float = 0.0


def build_submission(job: FineTuneJob, settings: OperatorSettings, submission: str) -> Submission:
    """The Ray job of a FineTuneJob: `python -m graft.jobs --spec finetunejob.yaml --result URI`.

    The spec travels as the job's working_dir package (no shared volume needed for it), with
    `checkpoints.storage` narrowed to the job's directory `<storage>/<namespace>/<name>-<uid8>`. The driver
    reserves no CPU: Ray Train's workers request spec.resources themselves and a driver holding a
    CPU would starve them on a small cluster."""
    name = job.metadata.name
    namespace = job.metadata.namespace or ""
    uid = job.metadata.uid_or_empty()
    result = job_result_uri(job, settings) or LOCAL_RESULT
    argv = ["python", "-m", "graft.jobs", "--spec", SPEC_FILE, "--result-b64", encode_arg(result)]  # no raw tenant byte in a shell line
    env = {**runtime_env(job, settings)["env_vars"], "GRAFT_JOB_NAME": name}
    doc = spec_document(job, settings)  # the storage root and the uid: the job writes under its own directory
    return Submission(
        submission_id=submission,
        entrypoint=shlex.join(argv),
        env_vars=env,
        spec_yaml=yaml.safe_dump(doc, sort_keys=False),
        metadata={META_NAMESPACE: namespace, META_NAME: name, META_UID: uid},
    )


def _iso_ms(ms: int | None) -> str | None:
    if not ms:
        return None
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def as_run(
    info: JobInfo | None,
    *,
    suspend: bool,
    dashboard: str,
    submission: str,
    cluster_name: str | None = None,
    error: str | None = None,
    log_uri: str | None = None,
) -> RunObservation:
    """The RunObservation of a Ray job (None: not submitted). PENDING/RUNNING while spec.suspend is
    true means a stop is under way (Suspended); STOPPED while suspended is Suspended, else Failed
    (someone stopped it). `error` replaces Ray's long failure message (it embeds 20 kB of log)."""
    if info is None:  # the id is kept: a job that ran and vanished is reported lost, never re-submitted
        return RunObservation(RunState.ABSENT, submission_id=submission, dashboard_url=dashboard)
    status = info.status
    if suspend and status in ("PENDING", "RUNNING", "STOPPED"):
        state, reason = RunState.SUSPENDED, "Suspended" if status == "STOPPED" else "Suspending"
        message = ("the Ray job is stopped while spec.suspend is true; setting it to false submits it again"
                   if status == "STOPPED" else "stopping the Ray job (spec.suspend)")
    elif status == "PENDING":
        state, reason = RunState.PENDING, "JobPending"
        message = "the Ray job is submitted and waits to start (runtime environment, resources)"
    elif status == "RUNNING":
        state, reason, message = RunState.RUNNING, "JobRunning", "the Ray job is running"
    elif status == "SUCCEEDED":
        state, reason, message = RunState.SUCCEEDED, "ReadingResult", "the Ray job succeeded; reading its result"
    else:
        state, reason = RunState.FAILED, f"Job{status.capitalize()}"
        message = error or info.message or f"the Ray job ended {status}"
    return RunObservation(
        state, reason, message, cluster_name=cluster_name, submission_id=submission, dashboard_url=dashboard,
        start_time=_iso_ms(info.start_time_ms) if status != "PENDING" else None,
        end_time=_iso_ms(info.end_time_ms) if info.terminal else None, log_uri=log_uri,
    )


_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_ACTOR_PREFIX = re.compile(r"^\(\w+ pid=\d+(, ip=[^)]*)?\)\s*")
_GRAFT_FAILURE = re.compile(r"\[graft\] (?:training failed|job failed): (.+)")
_EXCEPTION = re.compile(r"^([A-Za-z_][\w.]*(?:Error|Exception|Exit|Interrupt))(?:: .+|$)")
_NOISE = re.compile(r"^-{3,}|^Traceback \(most recent call last\)|^\s+File \"|^\s*\^+\s*$")


def _clean(line: str) -> str:
    return _ACTOR_PREFIX.sub("", _ANSI.sub("", line)).rstrip()


def error_summary(log: str, limit: int = 1500) -> str:
    """The lines of a failed job's log that say what went wrong.

    graft.jobs' own `[graft] training failed: ...` line when there is one; else the last Python
    exception line (`ValueError: ...`); else the last non-empty lines (graft.jobs prints spec
    problems as `path: message` lines before exiting with status 2)."""
    lines = [_clean(ln) for ln in log.splitlines()]
    lines = [ln for ln in lines if ln.strip()]
    for line in reversed(lines):
        found = _GRAFT_FAILURE.search(line)
        if found:
            return found.group(1).strip()[:limit]
    for line in reversed(lines):
        if _EXCEPTION.match(line.strip()):
            return line.strip()[:limit]
    tail: list[str] = []
    for line in reversed(lines):
        if _NOISE.match(line) or "job_manager.py" in line or line.startswith("Running entrypoint for job"):
            continue
        tail.insert(0, line.strip())
        if len(tail) >= 6 or sum(len(t) for t in tail) > limit:
            break
    return "\n".join(tail)[-limit:]


class RayJobs:
    """The Job Submission API of one Ray dashboard."""

    def __init__(self, dashboard: str, timeout: float = 15.0, token: str | None = None) -> None:
        self.dashboard = dashboard.rstrip("/")
        self.timeout = timeout
        self.headers = auth_headers(token)  # Ray token authentication (graft.operator.rayauth)

    def _request(self, method: str, path: str) -> httpx.Response:
        url = f"{self.dashboard}{path}"
        try:
            return httpx.request(method, url, timeout=self.timeout, headers=self.headers)
        except httpx.HTTPError as exc:
            raise ClusterUnavailable(f"cannot reach the Ray dashboard at {self.dashboard} ({method} {path}): {exc}") from exc

    def _fail(self, resp: httpx.Response, what: str) -> ClusterUnavailable:
        return ClusterUnavailable(f"{what} on {self.dashboard}: HTTP {resp.status_code}: {resp.text[:500]}")

    def info(self, submission: str) -> JobInfo | None:
        """The job's status; None when the cluster has no job of this id."""
        resp = self._request("GET", f"/api/jobs/{submission}")
        if resp.status_code == 404:
            return None
        if resp.status_code != 200:
            raise self._fail(resp, f"reading Ray job {submission}")
        what = f"reading Ray job {submission} on {self.dashboard}"
        doc = json_object(resp, what)
        times = doc.get("start_time"), doc.get("end_time")
        if any(t is not None and (isinstance(t, bool) or not isinstance(t, int)) for t in times):
            raise UnexpectedAnswer(f"{what}: start_time and end_time must be integers (ms), got {str(times)[:100]}")
        return JobInfo(
            submission_id=submission,
            status=str(doc.get("status") or "PENDING"),
            message=str(doc.get("message") or ""),
            start_time_ms=times[0] or None,
            end_time_ms=times[1] or None,
        )

    def logs(self, submission: str) -> str | None:
        """The job's log (driver stdout and stderr), read at most MAX_LOG_BYTES of; None when there is
        no such job. A larger log is refused (ClusterUnavailable), never read whole."""
        url = f"{self.dashboard}/api/jobs/{submission}/logs"
        try:
            code, doc = get_json(url, MAX_LOG_BYTES, self.timeout, headers=self.headers)
        except (httpx.HTTPError, ValueError) as exc:  # TooLarge and bad JSON are ValueErrors
            raise ClusterUnavailable(f"reading the log of Ray job {submission} on {self.dashboard}: {exc}") from exc
        if code == 404:
            return None
        if code != 200:
            raise ClusterUnavailable(f"reading the log of Ray job {submission} on {self.dashboard}: HTTP {code}")
        if doc is not None and not isinstance(doc, dict):
            raise UnexpectedAnswer(f"reading the log of Ray job {submission} on {self.dashboard}: expected a JSON object")
        return str((doc or {}).get("logs") or "")

    def stop(self, submission: str) -> bool:
        """Ask Ray to stop the job (SIGTERM, then SIGKILL); False when it was not running."""
        resp = self._request("POST", f"/api/jobs/{submission}/stop")
        if resp.status_code == 404:
            return False
        if resp.status_code != 200:
            raise self._fail(resp, f"stopping Ray job {submission}")
        return bool(json_object(resp, f"stopping Ray job {submission} on {self.dashboard}").get("stopped"))

    def delete(self, submission: str) -> bool:
        """Forget a finished job (its record and log pointer); False when there is no such job."""
        resp = self._request("DELETE", f"/api/jobs/{submission}")
        if resp.status_code == 404:
            return False
        if resp.status_code != 200:
            raise self._fail(resp, f"deleting Ray job {submission}")
        return bool(json_object(resp, f"deleting Ray job {submission} on {self.dashboard}").get("deleted"))

    def submit(self, sub: Submission) -> str:
        """Submit through JobSubmissionClient (it packages and uploads the working dir)."""
        from ray.job_submission import JobSubmissionClient

        with tempfile.TemporaryDirectory(prefix="graft-submit-") as tmp:
            (Path(tmp) / SPEC_FILE).write_text(sub.spec_yaml)
            try:
                client = JobSubmissionClient(self.dashboard, headers=dict(self.headers) or None)
                return client.submit_job(
                    entrypoint=sub.entrypoint,
                    submission_id=sub.submission_id,
                    runtime_env={"working_dir": tmp, "env_vars": dict(sub.env_vars)},
                    metadata=dict(sub.metadata),
                    entrypoint_num_cpus=sub.entrypoint_num_cpus,
                    entrypoint_num_gpus=sub.entrypoint_num_gpus,
                )
            except (ConnectionError, RuntimeError, OSError) as exc:  # requests' errors subclass OSError
                raise ClusterUnavailable(
                    f"submitting Ray job {sub.submission_id} to {self.dashboard} failed: {exc}"
                ) from exc
