"""Real Serve autoscaling: bounded load at a local endpoint adds replicas up to maxReplicas, and
they go away again after the load stops.

The deployment is Graft's own (`serve_config` from a ServingSpec); only Serve's up/down-scale
delays are shortened (defaults 30 s / 600 s) so the test is bounded in time.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from graft.api.spec import ServingSpec

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

APP = "graft-autoscale-e2e"
PREFIX = "/autoscale"
CLIENTS = 6
LOAD_LIMIT_S = 120.0
DOWN_LIMIT_S = 90.0


def running_replicas(deployment: str) -> int:
    from ray import serve

    app = serve.status().applications.get(APP)
    if app is None or deployment not in app.deployments:
        return 0
    return int(app.deployments[deployment].replica_states.get("RUNNING", 0))


def wait_for(predicate: object, timeout_s: float, what: str) -> float:
    """Poll `predicate()` every 0.5 s; return the seconds it took, fail naming `what` on timeout."""
    started = time.monotonic()
    while not predicate():  # type: ignore[operator]
        if time.monotonic() - started > timeout_s:
            pytest.fail(f"{what} did not happen within {timeout_s:.0f} s")
        time.sleep(0.5)
    return time.monotonic() - started


@pytest.fixture
def autoscaling_endpoint(ray_cluster: dict[str, float], untrained_classifier: Path) -> Iterator[tuple[str, str]]:
    from ray import serve

    from graft.serving.app import application
    from graft.serving.args import ServeArgs, serve_config
    from graft.serving.deploy import endpoint_url, proxy_port, shutdown_local, wait_healthy
    from testbed.ports import free_port

    serving = ServingSpec.model_validate(
        {"minReplicas": 1, "maxReplicas": 2, "resources": {"cpus": 0.5}, "batching": {"maxBatchSize": 2, "batchWaitTimeoutS": 0.01}}
    )
    args = ServeArgs.from_serving(untrained_classifier.as_uri(), serving)
    deployment = serve_config(args, app_name=APP, route_prefix=PREFIX, serving=serving)["deployments"][0]
    deployment["autoscaling_config"].update({"upscale_delay_s": 2.0, "downscale_delay_s": 5.0, "look_back_period_s": 2.0, "metrics_interval_s": 0.5})
    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    serve.run(application(args, deployment), name=APP, route_prefix=PREFIX)
    url = endpoint_url(proxy_port(port), PREFIX)
    wait_healthy(url, APP, timeout_s=180)
    try:
        yield url, args.deployment_name
    finally:
        shutdown_local()


def test_load_scales_replicas_up_to_max_and_back_down(autoscaling_endpoint: tuple[str, str]) -> None:
    url, deployment = autoscaling_endpoint
    assert running_replicas(deployment) == 1
    stop = threading.Event()
    answered: list[int] = []

    def client() -> None:
        with httpx.Client(timeout=60) as http:
            while not stop.is_set():
                answered.append(http.post(f"{url}/predict", json={"texts": ["a fine film"] * 2}).status_code)

    threads = [threading.Thread(target=client, daemon=True) for _ in range(CLIENTS)]
    for t in threads:
        t.start()
    try:
        up = wait_for(lambda: running_replicas(deployment) == 2, LOAD_LIMIT_S, "scaling up to maxReplicas (2) under load")
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=60)
    down = wait_for(lambda: running_replicas(deployment) == 1, DOWN_LIMIT_S, "scaling back down to minReplicas (1) after the load")

    assert answered and set(answered) == {200}, sorted(set(answered))
    print(f"autoscaling: 2 replicas {up:.1f} s into the load, back to 1 replica {down:.1f} s after it stopped ({len(answered)} requests)")
