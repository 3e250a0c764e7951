"""The orphan sweep: stop Ray work on shared clusters whose owning object is gone.

Nothing in Kubernetes owns a Ray job submitted to a shared cluster, nor a Serve application
deployed there; the finalizers of FineTuneJobs and ModelEndpoints remove them. A tenant who removes
the finalizer, or whose object cannot be parsed any more when it is deleted, would leave the work
running (and uncounted by quota). Every sweep, on each shared cluster the operator knows:

- lists the Ray jobs and stops the running ones that carry Graft's metadata for a watched namespace
  but whose FineTuneJob (namespace, name and uid) no longer exists;
- lists the Serve applications and removes Graft's (`<namespace>.<name>`, Graft's import path and
  route) of a watched namespace whose ModelEndpoint no longer points at that cluster.

The lists of live objects come from the operator's store, which a restarted operator fills from its
watches over several seconds; so before anything is stopped or removed, `Confirm` asks the API server
whether the owner really is gone (a job or application whose owner exists, or cannot be read, is left
alone).

`orphans`, `orphan_apps` and `clusters_in_use` are pure; `sweep_cluster` and `sweep_serve` do the
REST calls (bounded, with timeouts); `Sweeper` remembers every admitted cluster (a deleted job's cluster is swept too) and
runs from the controller's resync thread. Only clusters of admitted objects are ever called: a
refused address (admission) never reaches the sweep.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from functools import partial
from typing import Protocol

import httpx
from kubernetes.client import ApiException
from pydantic import ValidationError

from graft.api.spec import ClusterRef
from graft.operator import kube as k
from graft.operator.guard import Failed, attempt
from graft.operator.settings import OperatorSettings
from graft.operator.shared.jobs import META_NAME, META_NAMESPACE, META_UID, ClusterUnavailable
from graft.operator.shared.naming import app_name, dashboard_url, route_prefix
from graft.operator.shared.serve import ServeApi, declarative_configs
from graft.serving.args import IMPORT_PATH

log = logging.getLogger("graft.operator.sweep")
RUNNING = ("PENDING", "RUNNING")
MAX_LIST_BYTES = 16 * 1024 * 1024  # the job list of a busy cluster is large; never read it unbounded


@dataclass(frozen=True)
class Owner:
    namespace: str
    name: str
    uid: str


class Confirm(Protocol):
    """The API server's word before the sweep destroys anything: True when the owner still exists
    (or cannot be read), so the Ray job or application is kept."""

    def job_exists(self, owner: Owner) -> bool: ...

    def app_served(self, app: str, dashboard: str) -> bool: ...


class ApiConfirm:
    """`Confirm` by reading the owner from the API server (one GET per orphan candidate)."""

    def __init__(self, kube: k.Kube, settings: OperatorSettings) -> None:
        self.kube, self.settings = kube, settings

    def job_exists(self, owner: Owner) -> bool:
        try:
            raw = self.kube.get(k.FINETUNEJOBS, owner.namespace, owner.name)
        except ApiException as exc:
            log.warning("orphan sweep: cannot read FineTuneJob %s/%s (%s); its Ray job is kept", owner.namespace, owner.name, exc.status)
            return True
        return raw is not None and (raw.get("metadata") or {}).get("uid") == owner.uid

    def app_served(self, app: str, dashboard: str) -> bool:
        namespace, _, name = app.partition(".")
        try:
            raw = self.kube.get(k.MODELENDPOINTS, namespace, name)
        except ApiException as exc:
            log.warning("orphan sweep: cannot read ModelEndpoint %s/%s (%s); its application is kept", namespace, name, exc.status)
            return True
        return raw is not None and app in live_apps([raw], self.settings).get(dashboard, set())


class TrustTheStore:
    """No second look: the live sets given to the sweep are complete (tests of the pure parts)."""

    def job_exists(self, owner: Owner) -> bool:
        return False

    def app_served(self, app: str, dashboard: str) -> bool:
        return False


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


def sweep_cluster(dashboard: str, live: set[Owner], watched: set[str] | None, confirm: Confirm = TrustTheStore(),
                  timeout: float = 15.0) -> list[str]:
    """Stop the orphaned Graft jobs of one shared cluster; returns their submission ids."""
    jobs = list_jobs(dashboard, timeout)
    owners = {str(j["submission_id"]): owner_of(j) for j in jobs if isinstance(j.get("submission_id"), str)}
    stopped = []
    for sid in orphans(jobs, live, watched):
        owner = owners.get(sid)
        if owner is not None and confirm.job_exists(owner):
            continue  # the store had not caught up with the API server yet
        resp = httpx.post(f"{dashboard.rstrip('/')}/api/jobs/{sid}/stop", timeout=timeout)
        if resp.status_code == 200:
            log.warning("stopped Ray job %s on %s: its FineTuneJob is gone", sid, dashboard)
            stopped.append(sid)
    return stopped


def orphan_apps(details: dict[str, object], live: set[str], watched: set[str] | None) -> list[str]:
    """Names of Graft's Serve applications (from GET /api/serve/applications/) that no live
    ModelEndpoint serves on this cluster. An application is Graft's when its name is
    `<namespace>.<name>` (namespaces hold no dots), its route `/<namespace>/<name>` and its import
    path Graft's; any other application is left alone."""
    out = []
    for name, cfg in declarative_configs(dict(details)).items():
        namespace, dot, endpoint = name.partition(".")
        if not (dot and namespace and endpoint) or name in live:
            continue
        if watched is not None and namespace not in watched:
            continue
        if cfg.get("import_path") == IMPORT_PATH and cfg.get("route_prefix") == route_prefix(namespace, endpoint):
            out.append(name)
    return sorted(out)


def sweep_serve(dashboard: str, live: set[str], watched: set[str] | None, confirm: Confirm = TrustTheStore(),
                timeout: float = 15.0) -> list[str]:
    """Remove the orphaned Graft applications of one shared cluster; returns their names."""
    api = ServeApi(dashboard, timeout)
    removed = []
    for name in orphan_apps(api.details(), live, watched):
        if confirm.app_served(name, dashboard):
            continue
        if api.remove(name):
            log.warning("removed Serve application %s on %s: its ModelEndpoint is gone", name, dashboard)
            removed.append(name)
    return removed


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


def live_apps(endpoints: Iterable[dict[str, object]], settings: OperatorSettings) -> dict[str, set[str]]:
    """Dashboard -> the Serve applications ModelEndpoints deploy there (any phase: a Pending or
    deleting endpoint's application is its own finalizer's business, not the sweep's)."""
    out: dict[str, set[str]] = {}
    for raw in endpoints:
        ref, meta = _cluster(raw, "cluster"), raw.get("metadata")
        if ref is None or not isinstance(meta, dict):
            continue
        ns = str(meta.get("namespace") or "")
        out.setdefault(dashboard_url(ref, ns, settings), set()).add(app_name(ns, str(meta.get("name"))))
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

    def run(self, jobs: list[dict[str, object]], endpoints: list[dict[str, object]], now: float,
            confirm: Confirm = TrustTheStore()) -> list[str]:
        """Stop orphaned jobs and remove orphaned applications on every cluster in use now or seen
        before (each confirmed gone by `confirm`); returns their ids and names. One cluster's trouble,
        whatever it raises, skips that cluster only (graft.operator.guard)."""
        self._last = now
        self.known |= clusters_in_use(jobs, endpoints, self.settings)
        live, apps = live_owners(jobs), live_apps(endpoints, self.settings)
        stopped: list[str] = []
        for dashboard in sorted(self.known):
            done = attempt(f"the orphan sweep of {dashboard}", partial(_sweep_one, dashboard, live, apps, self.watched, confirm),
                           (httpx.HTTPError, ValueError, OSError, ClusterUnavailable))
            if isinstance(done, Failed):
                log.warning("orphan sweep of %s skipped: %s", dashboard, done.error)
            else:
                stopped += done
        return stopped


def _sweep_one(dashboard: str, live: set[Owner], apps: dict[str, set[str]], watched: set[str] | None, confirm: Confirm) -> list[str]:
    return sweep_cluster(dashboard, live, watched, confirm) + sweep_serve(dashboard, apps.get(dashboard, set()), watched, confirm)
