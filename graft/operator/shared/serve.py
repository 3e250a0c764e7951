"""Serving on a shared Ray cluster through Ray Serve's declarative REST API.

`PUT /api/serve/applications/` replaces the whole set of declaratively deployed applications, so
every change is read-modify-write: GET the deployed config of every declarative application,
replace or drop ours, PUT the lot (Serve leaves applications whose config did not change alone,
and keeps an updated application's old replicas serving until the new ones are ready). Writers
in this process are serialized per cluster; kopf peering keeps a single active operator.

The application's status becomes a typed `ServeObservation` (`as_serve`), as a RayService's does.
"""

from __future__ import annotations

import json
import threading
from typing import Any

import httpx

from graft.api.endpoint import ModelEndpoint
from graft.operator.backends.base import ServeObservation
from graft.operator.settings import OperatorSettings
from graft.operator.shared.jobs import ClusterUnavailable, UnexpectedAnswer, json_object
from graft.operator.shared.naming import app_name, route_prefix
from graft.serving.args import ServeArgs, serve_config

APPLICATIONS = "/api/serve/applications/"
# http_options keys Serve reports that a PUT may carry back unchanged.
_HTTP_KEYS = ("host", "port", "root_path", "request_timeout_s", "keep_alive_timeout_s")
_locks: dict[str, threading.Lock] = {}
_locks_guard = threading.Lock()


def _cluster_lock(dashboard: str) -> threading.Lock:
    with _locks_guard:
        return _locks.setdefault(dashboard, threading.Lock())



def build_application(endpoint: ModelEndpoint, settings: OperatorSettings) -> dict[str, Any]:
    """The Serve config entry of an endpoint on a shared cluster: tenant-scoped name and route
    (zero-downtime replacement of replicas on promotion comes with every `serve_config` entry)."""
    ns = endpoint.metadata.namespace or ""
    spec = endpoint.spec
    args = ServeArgs.from_serving(
        spec.model.uri, spec.serving, model_version=spec.model.version, max_seq_length=spec.model.max_seq_length,
        trust_remote_code=spec.model.trust_remote_code, served_model_name=endpoint.metadata.name, task=spec.model.task,
    )
    return serve_config(
        args,
        app_name=app_name(ns, endpoint.metadata.name),
        route_prefix=route_prefix(ns, endpoint.metadata.name),
        serving=spec.serving,
        env=dict(settings.serve_env),
    )


def _canonical(doc: Any) -> str:
    return json.dumps(doc, sort_keys=True, default=str)


def http_port(details: dict[str, Any], default: int) -> int:
    """The port of the running Serve HTTP proxy (`default` when Serve is not running yet)."""
    opts = details.get("http_options") or {}
    return int(opts.get("port") or default) if details.get("applications") or details.get("controller_info") else default


def declarative_configs(details: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The deployed config of every application deployed through the REST API (by name)."""
    out: dict[str, dict[str, Any]] = {}
    for name, app in (details.get("applications") or {}).items():
        cfg = app.get("deployed_app_config")
        if app.get("source") == "declarative" and isinstance(cfg, dict) and cfg:
            out[name] = cfg
    return out


def merged_config(
    details: dict[str, Any], *, put: dict[str, Any] | None = None, drop: str | None = None, default_port: int = 8000
) -> dict[str, Any]:
    """The PUT body: every declarative application as deployed, with `put` replacing (or adding) its
    namesake and `drop` removed; Serve's current HTTP, gRPC and proxy options carried over."""
    apps = declarative_configs(details)
    if drop is not None:
        apps.pop(drop, None)
    if put is not None:
        apps[put["name"]] = put
    running = bool(details.get("controller_info"))
    body: dict[str, Any] = {"applications": list(apps.values())}
    if running:
        opts = details.get("http_options") or {}
        body["http_options"] = {key: opts[key] for key in _HTTP_KEYS if opts.get(key) is not None}
        grpc = details.get("grpc_options") or {}
        if grpc.get("port"):
            body["grpc_options"] = {"port": grpc["port"], "grpc_servicer_functions": grpc.get("grpc_servicer_functions") or []}
        if details.get("proxy_location"):
            body["proxy_location"] = details["proxy_location"]
        if details.get("target_capacity") is not None:
            body["target_capacity"] = details["target_capacity"]
    else:  # Serve starts with this PUT: listen on every interface so other pods reach the proxy
        body["http_options"] = {"host": "0.0.0.0", "port": default_port}
    return body


def _running_replicas(app: dict[str, Any]) -> int:
    return sum(
        1
        for dep in (app.get("deployments") or {}).values()
        for rep in dep.get("replicas") or []
        if rep.get("state") == "RUNNING"
    )


def as_serve(app: dict[str, Any] | None, application: str, url: str) -> ServeObservation:
    """The ServeObservation of one application's details (None: not deployed yet). Ready means some
    version answers: the application is RUNNING, or DEPLOYING an update while old replicas serve."""
    if app is None:
        return ServeObservation(exists=True, reason="Deploying", application=application,
                                message="the Serve application is being created on the shared cluster")
    status = str(app.get("status") or "")
    replicas = _running_replicas(app)
    version = ((app.get("deployed_app_config") or {}).get("args") or {}).get("modelVersion")
    serving = status == "RUNNING" or (status == "DEPLOYING" and replicas > 0)
    return ServeObservation(
        exists=True, ready=serving, app_status=status, reason="Serving" if serving else "Deploying",
        message=app.get("message") or f"the Serve application is {status.lower() or 'being created'}",
        replicas=replicas, served_version=int(version) if status == "RUNNING" and version is not None else None,
        url=url, application=application,
    )


def details_of(resp: httpx.Response, what: str) -> dict[str, Any]:
    """Serve's details as the code reads them: an object whose `applications` is an object of
    objects and whose option fields are objects; UnexpectedAnswer for any other shape."""
    doc = json_object(resp, what)
    apps = doc.get("applications")
    if apps is not None and not (isinstance(apps, dict) and all(isinstance(a, dict) for a in apps.values())):
        raise UnexpectedAnswer(f"{what}: 'applications' must be an object of application objects")
    for key in ("http_options", "grpc_options", "controller_info"):
        if doc.get(key) is not None and not isinstance(doc[key], dict):
            raise UnexpectedAnswer(f"{what}: {key!r} must be an object")
    return doc


class ServeApi:
    """Serve's REST API on one Ray dashboard."""

    def __init__(self, dashboard: str, timeout: float = 30.0) -> None:
        self.dashboard = dashboard.rstrip("/")
        self.timeout = timeout

    def details(self) -> dict[str, Any]:
        """GET /api/serve/applications/: Serve's options and every application's status."""
        try:
            resp = httpx.get(f"{self.dashboard}{APPLICATIONS}", timeout=self.timeout)
        except httpx.HTTPError as exc:
            raise ClusterUnavailable(f"cannot reach the Ray dashboard at {self.dashboard}: {exc}") from exc
        if resp.status_code != 200:
            raise ClusterUnavailable(f"reading Serve applications on {self.dashboard}: HTTP {resp.status_code}: {resp.text[:500]}")
        return details_of(resp, f"reading Serve applications on {self.dashboard}")

    def _put(self, body: dict[str, Any]) -> None:
        try:
            resp = httpx.put(f"{self.dashboard}{APPLICATIONS}", json=body, timeout=self.timeout)
        except httpx.HTTPError as exc:
            raise ClusterUnavailable(f"cannot reach the Ray dashboard at {self.dashboard}: {exc}") from exc
        if resp.status_code != 200:
            raise ClusterUnavailable(f"Serve refused the config on {self.dashboard}: HTTP {resp.status_code}: {resp.text[:1000]}")

    def apply(self, app: dict[str, Any], default_port: int) -> tuple[bool, dict[str, Any]]:
        """Deploy or update one application; (whether a PUT was sent, the details read before)."""
        with _cluster_lock(self.dashboard):
            details = self.details()
            current = declarative_configs(details).get(app["name"])
            if current is not None and _canonical(current) == _canonical(app):
                return False, details
            self._put(merged_config(details, put=app, default_port=default_port))
            return True, details

    def remove(self, name: str) -> bool:
        """Delete one application (PUT every other one); False when it was not deployed."""
        with _cluster_lock(self.dashboard):
            details = self.details()
            if name not in declarative_configs(details):
                return False
            self._put(merged_config(details, drop=name))
            return True

    def application(self, name: str) -> tuple[dict[str, Any] | None, dict[str, Any]]:
        """(the application's details or None, Serve's whole details)."""
        details = self.details()
        return (details.get("applications") or {}).get(name), details
