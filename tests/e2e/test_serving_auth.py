"""The endpoint bearer token on the real Serve app (local Ray, real model, real HTTP): the token
arrives as the replica's environment, as the RayService's secretKeyRef delivers it; a hostile
client without it or with a wrong one gets 401, and a chunked body too large is refused with 413."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from graft.api.endpoint import BEARER_TOKEN_ENV
from graft.api.spec import ServingSpec
from testbed.ports import free_port
from tests.unit.live_http import post_chunked

pytestmark = [pytest.mark.e2e, pytest.mark.tenancy]

APP = "graft-serving-auth-e2e"
PREFIX = "/guarded"
TOKEN = "team-a-endpoint-token"


@pytest.fixture(scope="module")
def guarded(ray_cluster: dict[str, float], untrained_classifier: Path) -> Iterator[str]:
    from ray import serve

    from graft.serving.app import application
    from graft.serving.args import ServeArgs, serve_config
    from graft.serving.deploy import endpoint_url, proxy_port, shutdown_local, wait_healthy

    serving = ServingSpec.model_validate({"minReplicas": 1, "maxReplicas": 1, "maxTextLength": 200})
    args = ServeArgs.from_serving(untrained_classifier.as_uri(), serving, served_model_name=APP, require_bearer_token=True)
    deployment = serve_config(args, app_name=APP, route_prefix=PREFIX, serving=serving)["deployments"][0]
    deployment["ray_actor_options"]["runtime_env"] = {"env_vars": {BEARER_TOKEN_ENV: TOKEN}}
    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    serve.run(application(args, deployment), name=APP, route_prefix=PREFIX)
    url = endpoint_url(proxy_port(port), PREFIX)
    wait_healthy(url, APP, timeout_s=180)
    try:
        yield url
    finally:
        shutdown_local(APP)


def predict(url: str, headers: dict[str, str]) -> httpx.Response:
    return httpx.post(f"{url}/predict", json={"text": "great"}, headers=headers, timeout=60)


def test_without_the_token_the_real_app_answers_401(guarded: str) -> None:
    response = predict(guarded, {})
    assert response.status_code == 401 and response.headers["www-authenticate"].startswith("Bearer")


def test_with_a_wrong_token_the_real_app_answers_401(guarded: str) -> None:
    assert predict(guarded, {"Authorization": "Bearer not-the-token"}).status_code == 401


def test_with_the_token_the_real_app_predicts(guarded: str) -> None:
    response = predict(guarded, {"Authorization": f"Bearer {TOKEN}"})
    assert response.status_code == 200, response.text
    assert len(response.json()["predictions"]) == 1


def test_a_chunked_body_past_the_limit_is_refused_by_the_real_app(guarded: str) -> None:
    parts = urlsplit(guarded)
    result = post_chunked((parts.hostname or "", parts.port or 80), f"{PREFIX}/predict", 300 * 1024 * 1024,
                          headers={"Authorization": f"Bearer {TOKEN}"})
    assert result.status == 413 and result.sent < 64 * 1024 * 1024


def test_health_answers_probes_without_the_token_and_details_only_with_it(guarded: str) -> None:
    assert httpx.get(f"{guarded}/healthz", timeout=30).json() == {"status": "ok"}
    detailed = httpx.get(f"{guarded}/healthz", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30).json()
    assert detailed["status"] == "ok" and "model_uri" in detailed
