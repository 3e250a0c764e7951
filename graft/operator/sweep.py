"""The orphan sweep: stop Ray work on shared clusters whose owning object is gone.

Nothing in Kubernetes owns a Ray job submitted to a shared cluster; its FineTuneJob's finalizer
stops it. A tenant who removes the finalizer, or whose object cannot be parsed any more when it is
deleted, would leave the job running (and uncounted by quota). Every sweep lists the Ray jobs of
each shared cluster the operator knows, and stops the running ones that carry Graft's metadata for
a watched namespace but whose FineTuneJob (namespace, name and uid) no longer exists.

`orphans` and `clusters_in_use` are pure; `sweep_cluster` does the two REST calls (bounded, with
timeouts); `Sweeper` remembers every admitted cluster (a deleted job's cluster is swept too) and
runs from the controller's resync thread. Only clusters of admitted objects are ever called: a
refused address (admission) never reaches the sweep.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from dataclasses import dataclass

import httpx
from pydantic import ValidationError

from graft.api.spec import ClusterRef
from graft.operator.settings import OperatorSettings
from graft.operator.shared.jobs import META_NAME, META_NAMESPACE, META_UID
from graft.operator.shared.naming import dashboard_url

log = logging.getLogger("graft.operator.sweep")
RUNNING = ("PENDING", "RUNNING")
MAX_LIST_BYTES = 16 * 1024 * 1024  # the job list of a busy cluster is large; never read it unbounded


@dataclass(frozen=True)
class Owner:
    namespace: str
    name: str
    uid: str


def owner_of(job: dict[str, object]) -> Owner | None:
    """The FineTuneJob a Ray job was submitted for (None: not a Graft job)."""
    meta = job.get("metadata")
    if not isinstance(meta, dict):
        return None
    ns, name, uid = meta.get(META_NAMESPACE), meta.get(META_NAME), meta.get(META_UID)
    if not (isinstance(ns, str) and isinstance(name, str) and isinstance(uid, str) and ns and name and uid):
        return None
    return Owner(ns, name, uid)


def orphans(ray_jobs: Iterable[dict[str, object]], live: set[Owner], watched: set[str] | None) -> list[str]:
    """Submission ids of running Graft jobs whose owner is not in `live`. `watched`: the namespaces
    this operator is responsible for (None: all), so another operator's jobs are left alone."""
    out = []
    for job in ray_jobs:
        owner = owner_of(job)
        if owner is None or job.get("status") not in RUNNING:
            continue
        if watched is not None and owner.namespace not in watched:
            continue
        if owner not in live and isinstance(job.get("submission_id"), str):
            out.append(str(job["submission_id"]))
    return sorted(out)


def list_jobs(dashboard: str, timeout: float = 15.0) -> list[dict[str, object]]:
    """GET /api/jobs/ of a Ray dashboard, read at most MAX_LIST_BYTES."""
    with httpx.stream("GET", f"{dashboard.rstrip('/')}/api/jobs/", timeout=timeout) as resp:
        resp.raise_for_status()
        body = bytearray()
        for chunk in resp.iter_bytes():
            body += chunk
            if len(body) > MAX_LIST_BYTES:
                raise ValueError(f"the job list of {dashboard} is larger than {MAX_LIST_BYTES} bytes")
    doc = json.loads(bytes(body))
    return [j for j in doc if isinstance(j, dict)] if isinstance(doc, list) else []


def sweep_cluster(dashboard: str, live: set[Owner], watched: set[str] | None, timeout: float = 15.0) -> list[str]:
    """Stop the orphaned Graft jobs of one shared cluster; returns their submission ids."""
    stopped = []
    for sid in orphans(list_jobs(dashboard, timeout), live, watched):
        resp = httpx.post(f"{dashboard.rstrip('/')}/api/jobs/{sid}/stop", timeout=timeout)
        if resp.status_code == 200:
            log.warning("stopped Ray job %s on %s: its FineTuneJob is gone", sid, dashboard)
            stopped.append(sid)
    return stopped


def _cluster(raw: dict[str, object], *path: str) -> ClusterRef | None:
    node: object = raw.get("spec")
    for key in path:
        node = node.get(key) if isinstance(node, dict) else None
    if not isinstance(node, dict):
        return None
    try:
        return ClusterRef.model_validate(node)
    except ValidationError:
        return None


def _admitted(raw: dict[str, object], endpoint: bool) -> bool:
    status = raw.get("status")
    if not isinstance(status, dict):
        return False
    if endpoint:
        return bool(status.get("phase")) and status.get("phase") not in ("Rejected", "Failed")
    return bool(status.get("admitted"))


def live_owners(jobs: Iterable[dict[str, object]]) -> set[Owner]:
    out = set()
    for raw in jobs:
        meta = raw.get("metadata")
        if isinstance(meta, dict) and all(isinstance(meta.get(k), str) for k in ("namespace", "name", "uid")):
            out.add(Owner(str(meta["namespace"]), str(meta["name"]), str(meta["uid"])))
    return out


def clusters_in_use(jobs: Iterable[dict[str, object]], endpoints: Iterable[dict[str, object]], settings: OperatorSettings) -> set[str]:
    """Dashboards of the shared clusters that admitted jobs and endpoints use."""
    out = set()
    for raws, path, endpoint in ((jobs, ("runtime", "cluster"), False), (endpoints, ("cluster",), True)):
        for raw in raws:
            ref = _cluster(raw, *path)
            meta = raw.get("metadata")
            if ref is not None and _admitted(raw, endpoint) and isinstance(meta, dict):
                out.add(dashboard_url(ref, str(meta.get("namespace") or ""), settings))
    return out


class Sweeper:
    """Every `interval` seconds (called from the resync thread), sweep each known shared cluster."""

    def __init__(self, settings: OperatorSettings, watched: list[str], interval: float = 60.0) -> None:
        self.settings, self.interval = settings, interval
        plain = watched and not any(c in n for n in watched for c in "*?[")
        self.watched: set[str] | None = set(watched) if plain else None
        self.known: set[str] = set()
        self._last = 0.0

    def due(self, now: float) -> bool:
        return now - self._last >= self.interval

    def run(self, jobs: list[dict[str, object]], endpoints: list[dict[str, object]], now: float) -> list[str]:
        """Stop orphans on every cluster in use now or seen before; one cluster's trouble skips it only."""
        self._last = now
        self.known |= clusters_in_use(jobs, endpoints, self.settings)
        live = live_owners(jobs)
        stopped: list[str] = []
        for dashboard in sorted(self.known):
            try:
                stopped += sweep_cluster(dashboard, live, self.watched)
            except (httpx.HTTPError, ValueError, OSError) as exc:
                log.warning("orphan sweep of %s skipped: %s", dashboard, exc)
        return stopped
