"""How a training result travels from the job inside Ray to the FineTuneJob status.

Contract with `graft.jobs` (which never imports a Kubernetes client):

* the operator passes `--result URI` in the RayJob entrypoint; the job writes the TrainingResult
  JSON document there (fsspec: a path on shared storage, s3://, gs://, ...) when it finishes;
* the job also prints one line `GRAFT_RESULT <json>` to its log, the fallback when no shared
  storage is configured (read through the Ray dashboard's job-logs API while the cluster lives).

The operator copies the result into `status.result` as soon as it has read it, so a restart or the
RayJob's TTL deletion never loses it.
"""

from __future__ import annotations

from dataclasses import dataclass

import httpx
from pydantic import ValidationError

from graft import storage
from graft.api.result import RESULT_LOG_MARKER as RESULT_MARKER
from graft.api.result import TrainingResult
from graft.operator.bounded import MAX_LOG_BYTES, get_json
from graft.operator.names import run_dir
from graft.storage import RESULT_FILE


def result_uri(storage: str | None, namespace: str, job_name: str, uid: str) -> str | None:
    """Where the job writes its result: `<storage>/<namespace>/<name>-<uid8>/result.json` (None
    without storage). The uid keeps a re-created job with the same name from reading its
    predecessor's result; the namespace keeps tenants apart."""
    if not storage:
        return None
    return f"{run_dir(storage, namespace, job_name, uid)}/{RESULT_FILE}"


class ResultUnavailable(RuntimeError):
    """The result is not readable (yet): the message says where it was looked for."""


@dataclass(frozen=True)
class ResultSource:
    uri: str | None
    dashboard_url: str | None
    job_id: str | None


def parse_result(text: str, where: str) -> TrainingResult:
    try:
        return TrainingResult.model_validate_json(text)
    except ValidationError as exc:
        raise ResultUnavailable(f"{where} is not a TrainingResult document: {exc.errors()[0]['msg']}") from exc


def result_from_log(log: str) -> TrainingResult | None:
    """The last `GRAFT_RESULT {...}` line of a job log, parsed (None when there is none)."""
    for line in reversed(log.splitlines()):
        idx = line.find(RESULT_MARKER)
        if idx >= 0:
            return parse_result(line[idx + len(RESULT_MARKER):].strip(), "the GRAFT_RESULT log line")
    return None


MAX_RESULT_BYTES = 8 * 1024 * 1024  # a result document is kilobytes; never read an unbounded file whole


def read_result_file(uri: str) -> TrainingResult:
    try:
        fs, path = storage.fsspec_filesystem(uri)  # s3:// through pyarrow (graft[s3]); no client: StorageError
        with fs.open(path, "rb") as fh:
            data = fh.read(MAX_RESULT_BYTES + 1)
    except FileNotFoundError as exc:
        raise ResultUnavailable(f"{uri} does not exist (yet)") from exc
    except (OSError, ImportError, ValueError) as exc:  # unreachable, or no fsspec backend for the scheme
        raise ResultUnavailable(f"cannot read {uri}: {exc}") from exc
    if len(data) > MAX_RESULT_BYTES:
        raise ResultUnavailable(f"{uri} is larger than {MAX_RESULT_BYTES} bytes: not a result document")
    return parse_result(data.decode(errors="replace"), uri)


def read_result_from_dashboard(dashboard_url: str, job_id: str, timeout: float = 10.0) -> TrainingResult:
    base = dashboard_url if "://" in dashboard_url else f"http://{dashboard_url}"
    url = f"{base.rstrip('/')}/api/jobs/{job_id}/logs"
    try:
        code, doc = get_json(url, MAX_LOG_BYTES, timeout)  # bounded: a job may print gigabytes
    except (httpx.HTTPError, ValueError) as exc:  # TooLarge and bad JSON are ValueErrors
        raise ResultUnavailable(f"cannot read the job log from {url}: {exc}") from exc
    if code != 200:
        raise ResultUnavailable(f"cannot read the job log from {url}: HTTP {code}")
    if doc is not None and not isinstance(doc, dict):
        raise ResultUnavailable(f"the job log at {url} is not a JSON object")
    log = str((doc or {}).get("logs") or "")
    found = result_from_log(log)
    if found is None:
        raise ResultUnavailable(f"the job log at {url} has no {RESULT_MARKER.strip()} line")
    return found


def read_result(source: ResultSource) -> TrainingResult:
    """Storage first (survives the cluster), then the job log through the Ray dashboard."""
    problems: list[str] = []
    if source.uri:
        try:
            return read_result_file(source.uri)
        except ResultUnavailable as exc:
            problems.append(str(exc))
    if source.dashboard_url and source.job_id:
        try:
            return read_result_from_dashboard(source.dashboard_url, source.job_id)
        except ResultUnavailable as exc:
            problems.append(str(exc))
    if not problems:
        problems.append("no result storage (spec.checkpoints.storage or --result-storage) and no dashboard URL")
    raise ResultUnavailable("; ".join(problems))
