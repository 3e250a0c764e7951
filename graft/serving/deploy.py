"""Deploy the Serve application on the local Ray that the caller already initialised."""

from __future__ import annotations

import logging
import time

import httpx
import ray
from ray import serve

from graft.api.spec import ServingSpec
from graft.serving.app import application
from graft.serving.args import ServeArgs, serve_config
from graft.serving.model import label_names_of, resolve_model_dir

HOST = "127.0.0.1"
logger = logging.getLogger(__name__)


class DeployError(RuntimeError):
    """The application did not come up; the message says why and what to check."""


def endpoint_url(http_port: int, route_prefix: str) -> str:
    return f"http://{HOST}:{http_port}{route_prefix.rstrip('/')}"


def deploy_local(
    model_uri: str,
    serving: ServingSpec,
    *,
    app_name: str,
    route_prefix: str = "/",
    http_port: int,
    blocking: bool = False,
    label_names: list[str] | None = None,
    model_version: int | str | None = None,
    max_seq_length: int = 128,
    trust_remote_code: bool = False,
    ready_timeout_s: float = 180.0,
    task: str = "text-classification",
) -> str:
    """Deploy `model_uri` as Serve application `app_name`; return its URL once /healthz answers 200.

    Serve's HTTP proxy listens on 127.0.0.1:`http_port`; if Serve already runs on this Ray, its proxy
    keeps the port it started with, and the returned URL has that port.
    A model directory that cannot be served raises ModelLoadError before anything is deployed.
    With `blocking=True`, keep serving until interrupted (Ctrl-C), then return.
    """
    # Fail fast, before Serve retries a replica that cannot load (the replica shares this filesystem).
    model_dir = resolve_model_dir(model_uri)
    if task == "text-classification":
        label_names_of(model_dir, label_names)
    if not ray.is_initialized():
        raise DeployError("Ray is not initialised; call ray.init(...) before deploy_local")
    args = ServeArgs.from_serving(
        model_uri,
        serving,
        label_names=label_names,
        model_version=model_version,
        max_seq_length=max_seq_length,
        task=task,
        served_model_name=app_name,
        trust_remote_code=trust_remote_code,
    )
    entry = serve_config(args, app_name=app_name, route_prefix=route_prefix, serving=serving)
    serve.start(http_options={"host": HOST, "port": http_port})
    http_port = proxy_port(http_port)
    try:
        serve.run(application(args, entry["deployments"][0]), name=app_name, route_prefix=route_prefix)
    except RuntimeError as exc:
        raise DeployError(f"Serve application {app_name!r} failed to deploy: {exc}") from exc
    url = endpoint_url(http_port, route_prefix)
    wait_healthy(url, app_name, timeout_s=ready_timeout_s)
    if blocking:
        try:
            while True:
                time.sleep(1)
        except KeyboardInterrupt:
            pass
    return url


def proxy_port(requested: int) -> int:
    """The port Serve's HTTP proxy really listens on: Serve keeps the options it first started with."""
    from ray.serve.context import _get_global_client  # no public getter for the running HTTP options

    client = _get_global_client(raise_if_no_controller_running=False)
    port = client.http_config.port if client is not None else requested
    if port != requested:
        logger.warning("Serve already runs on this Ray with its HTTP proxy on port %d; using it instead of %d", port, requested)
    return int(port)


def wait_healthy(url: str, app_name: str, *, timeout_s: float) -> dict[str, object]:
    """Poll `url`/healthz until it answers 200; fail early if Serve reports the application failed."""
    deadline = time.monotonic() + timeout_s
    last = "no answer yet"
    with httpx.Client(timeout=10.0) as client:
        while time.monotonic() < deadline:
            try:
                response = client.get(f"{url}/healthz")
                if response.status_code == 200:
                    return dict(response.json())
                last = f"HTTP {response.status_code}: {response.text[:200]}"
            except httpx.TransportError as exc:
                last = f"{type(exc).__name__}: {exc}"
            app = serve.status().applications.get(app_name)
            if app is not None and app.status in ("DEPLOY_FAILED", "UNHEALTHY"):
                raise DeployError(f"Serve application {app_name!r} is {app.status}: {app.message}")
            time.sleep(0.5)
    raise DeployError(f"{url}/healthz did not answer 200 within {timeout_s:.0f} s (last: {last}); see `serve status`")


def shutdown_local(app_name: str | None = None) -> None:
    """Delete one application, or (without a name) shut Serve down on this Ray."""
    if app_name is not None:
        serve.delete(app_name)
    else:
        serve.shutdown()
