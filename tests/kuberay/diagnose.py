"""One line that says what the node and the tenant namespace look like, for the message of a
flagship wait that timed out: CI keeps only the tail of its output, where pytest prints the first
line of each error, so the state that explains a timeout has to travel in that line."""

from __future__ import annotations

import json
import subprocess
from typing import Any, Callable

from tests.kuberay.release import Release

MAX_CHARS = 1500


def _items(release: Release, kind: str, namespace: str | None) -> list[dict[str, Any]]:
    args = ["get", kind, "-o", "json", *(["-n", namespace] if namespace else ["-A"])]
    try:
        p = release.cp.kubectl(*args, check=False, timeout=20)
    except subprocess.TimeoutExpired:
        return []
    if p.returncode != 0:
        return []
    return list(json.loads(p.stdout).get("items") or [])


def _pod(p: dict[str, Any]) -> str:
    st = p.get("status") or {}
    waiting = [c["state"]["waiting"].get("reason", "") for c in st.get("containerStatuses") or []
               if "waiting" in (c.get("state") or {})]
    restarts = sum(c.get("restartCount", 0) for c in st.get("containerStatuses") or [])
    unsched = [c.get("message", "")[:80] for c in st.get("conditions") or []
               if c.get("type") == "PodScheduled" and c.get("status") == "False"]
    extra = "/".join(filter(None, [*waiting, *unsched, f"restarts={restarts}" if restarts else ""]))
    gone = "(deleting)" if p["metadata"].get("deletionTimestamp") else ""
    return f"{p['metadata']['name']}:{st.get('phase')}{gone}{'/' + extra if extra else ''}"


def _phase(obj: dict[str, Any]) -> str:
    st = obj.get("status") or {}
    conds = ",".join(f"{c['type']}={c['status']}" for c in st.get("conditions") or [])
    state = st.get("phase") or st.get("jobDeploymentStatus") or st.get("state") or st.get("serviceStatus") or ""
    msg = (st.get("message") or "")[:160]
    return f"{obj['kind']}/{obj['metadata']['name']}:{state}[{conds}]{(' ' + msg) if msg else ''}"


def diagnose(release: Release) -> str:
    """Node conditions, pods (phase, waiting reason, restarts, why unscheduled) in the tenant and
    operator namespaces, Graft and KubeRay objects with their state, and the last Warning events."""
    parts: list[str] = []
    for node in _items(release, "nodes", ""):
        bad = [c["type"] for c in node["status"].get("conditions") or []
               if (c["type"] == "Ready") != (c["status"] == "True")]
        parts.append(f"node:{'+'.join(bad) or 'ok'}")
    for ns in (release.tenant, release.namespace):
        parts += [_pod(p) for p in _items(release, "pods", ns)]
    for kind in ("finetunejobs", "modelendpoints", "rayjobs.ray.io", "rayservices.ray.io", "rayclusters.ray.io"):
        parts += [_phase(o) for o in _items(release, kind, release.tenant)]
    warnings = [e for e in _items(release, "events", release.tenant) if e.get("type") == "Warning"]
    warnings.sort(key=lambda e: e.get("lastTimestamp") or e.get("eventTime") or "")
    parts += [f"warn {e['involvedObject'].get('name')}: {e.get('reason')} {(e.get('message') or '')[:120]}"
              for e in warnings[-4:]]
    return " | ".join(parts).replace("\n", " ")[:MAX_CHARS]


def waiting(release: Release, what: str) -> Callable[[], str]:
    """The `what` of a wait_until: what it waits for, then (when it times out) the state."""
    return lambda: f"{what}; state: {diagnose(release)}"
