"""Probes of a ModelEndpoint served by a RayService on the real node: /predict through the Serve
Service, and Serve's own view of the deployment (config, replicas) from the head's dashboard."""

from __future__ import annotations

import json
import urllib.request
from typing import Any

from tests.kuberay.release import Release, service_url


def answering_url(release: Release, endpoint: str) -> str | None:
    """The Serve Service's URL once ModelEndpoint `endpoint` is Ready and answers /predict (else None)."""
    if ((release.get("modelendpoint", endpoint) or {}).get("status") or {}).get("phase") != "Ready":
        return None
    services = [s["metadata"]["name"] for s in release.items("services") if s["metadata"]["name"].endswith("-serve-svc")]
    if not services:
        return None
    url = service_url(release, services[0], "serve")
    predict(url, "fine")
    return url


def predict(url: str, text: str) -> dict[str, Any]:
    req = urllib.request.Request(f"{url}/predict", data=json.dumps({"text": text}).encode(),
                                 headers={"content-type": "application/json"}, method="POST")
    with urllib.request.urlopen(req, timeout=30) as resp:
        return json.loads(resp.read())


def serve_dashboard(release: Release, endpoint: str) -> str:
    """The Ray dashboard of the RayService's active cluster (through its headless head Service)."""
    rs = release.get("rayservice", endpoint) or {}
    cluster = ((rs.get("status") or {}).get("activeServiceStatus") or {}).get("rayClusterName")
    assert cluster, f"RayService {endpoint} reports no active cluster: {rs.get('status')}"
    return service_url(release, f"{cluster}-head-svc", "dashboard")


def deployment(dashboard: str) -> dict[str, Any]:
    """Serve's view of the endpoint's one deployment (config and replicas), from the head's dashboard."""
    with urllib.request.urlopen(f"{dashboard}/api/serve/applications/", timeout=30) as resp:
        apps = json.loads(resp.read()).get("applications") or {}
    (app,) = apps.values()
    (only,) = app["deployments"].values()
    return {"config": app["deployed_app_config"]["deployments"][0], "replicas": only.get("replicas") or []}


def running_replicas(dashboard: str) -> int:
    return sum(1 for r in deployment(dashboard)["replicas"] if r.get("state") == "RUNNING")


def serve_workers(release: Release, endpoint: str) -> int:
    """Running (not terminating) Serve worker pods of the endpoint."""
    pods = release.items("pods", "-l", f"graft.dev/modelendpoint={endpoint},ray.io/node-type=worker")
    return sum(1 for p in pods if p["status"].get("phase") == "Running" and not p["metadata"].get("deletionTimestamp"))
