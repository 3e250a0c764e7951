"""The orphan sweep: stop Ray work on shared clusters whose owning object is gone.

Nothing in Kubernetes owns a Ray job submitted to a shared cluster; its FineTuneJob's finalizer
stops it. A tenant who removes the finalizer, or whose object cannot be parsed any more when it is
deleted, would leave the job running (and uncounted by quota). Every sweep lists the Ray jobs of
each shared cluster the operator knows, and stops the running ones that carry Graft's metadata for
a watched namespace but whose FineTuneJob (namespace, name and uid) no longer exists.

`orphans` is pure; `sweep_cluster` does the two REST calls (bounded, with timeouts).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from dataclasses import dataclass

import httpx

from graft.operator.shared.jobs import META_NAME, META_NAMESPACE, META_UID

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
