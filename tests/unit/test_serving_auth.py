"""The optional bearer token of a ModelEndpoint (issue 21, finding 10): a client without the token,
or with a wrong one, gets 401 over real HTTP; health routes stay open; the operator only passes a
secretKeyRef; a shared Serve cluster, which cannot receive the token, is refused at admission."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from fastapi import FastAPI, Request

from graft.api.crd import structural_schema
from graft.api.endpoint import BEARER_TOKEN_ENV, ModelEndpoint, ModelEndpointSpec
from graft.api.errors import SpecError
from graft.api.load import parse_as
from graft.serving import app as text_app
from graft.serving import image_app, llm_app
from graft.serving.auth import BearerTokenMiddleware, MissingTokenError, check_token_present
from tests.unit.live_http import live_server

pytestmark = [pytest.mark.unit, pytest.mark.tenancy]

TOKEN = "s3cret-token-of-team-a"


def guarded_app() -> FastAPI:
    api = FastAPI()
    api.add_middleware(BearerTokenMiddleware)

    @api.post("/v1/chat/completions")
    async def chat(request: Request) -> dict[str, int]:
        return {"read": len(await request.body())}

    @api.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok", "model_uri": "/mnt/graft/team-a/model"}

    return api


@pytest.fixture
def url(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    monkeypatch.setenv(BEARER_TOKEN_ENV, TOKEN)
    with live_server(guarded_app()) as (host, port):
        yield f"http://{host}:{port}"


def test_a_request_without_the_token_gets_401_with_www_authenticate(url: str) -> None:
    response = httpx.post(f"{url}/v1/chat/completions", json={"model": "m"})
    assert response.status_code == 401
    assert response.headers["www-authenticate"].startswith("Bearer")


def test_a_request_with_a_wrong_token_gets_401(url: str) -> None:
    response = httpx.post(f"{url}/v1/chat/completions", json={}, headers={"Authorization": "Bearer " + TOKEN[:-1] + "X"})
    assert response.status_code == 401 and "not valid" in response.json()["error"]


def test_a_request_with_the_token_reaches_the_route(url: str) -> None:
    response = httpx.post(f"{url}/v1/chat/completions", content=b"{}", headers={"Authorization": f"Bearer {TOKEN}"})
    assert response.status_code == 200 and response.json() == {"read": 2}


def test_health_answers_probes_without_the_token_but_not_its_details(url: str) -> None:
    response = httpx.get(f"{url}/healthz")
    assert response.status_code == 200 and response.json() == {"status": "ok"}
    detailed = httpx.get(f"{url}/healthz", headers={"Authorization": f"Bearer {TOKEN}"})
    assert detailed.json()["model_uri"] == "/mnt/graft/team-a/model"


@pytest.mark.parametrize("api", [text_app.api, image_app.image_api, llm_app.api], ids=["text", "image", "openai"])
def test_every_serving_app_checks_the_token(api: FastAPI) -> None:
    assert any(m.cls is BearerTokenMiddleware for m in api.user_middleware)


def test_a_replica_that_requires_a_token_and_has_none_refuses_to_start(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(BEARER_TOKEN_ENV, raising=False)
    with pytest.raises(MissingTokenError, match="bearerTokenSecret"):
        check_token_present(True)


def endpoint_spec(**extra: object) -> dict[str, object]:
    return {"model": {"uri": "/mnt/graft/runs/team-a/m/model"}, "auth": {"bearerTokenSecret": {"name": "tok", "key": "token"}}, **extra}


def test_a_token_on_a_shared_serve_cluster_is_refused_by_the_spec() -> None:
    with pytest.raises(SpecError, match="shared cluster"):
        parse_as(ModelEndpoint, {"metadata": {"name": "e", "namespace": "team-a"}, "spec": endpoint_spec(cluster={"name": "shared"})})


def test_the_crd_refuses_a_token_on_a_shared_serve_cluster() -> None:
    schema = structural_schema(ModelEndpointSpec)
    assert any("!has(self.auth) || !has(self.cluster)" == r["rule"] for r in schema["x-kubernetes-validations"])


def test_a_jobs_promotion_keeps_the_endpoints_token() -> None:
    from graft.api import FineTuneJob, TrainingResult
    from graft.operator import kube as k
    from graft.operator.cache import Store
    from graft.operator.promoter import promote
    from tests.unit.fake_kube import FakeKube

    kube = FakeKube()
    kube.create(k.MODELENDPOINTS, {"apiVersion": "graft.dev/v1alpha1", "kind": "ModelEndpoint",
                                   "metadata": {"name": "sentiment", "namespace": "team-a"}, "spec": endpoint_spec()})
    store = Store()
    for obj in kube.all(k.MODELENDPOINTS):
        store.put(k.MODELENDPOINTS, obj)
    job = FineTuneJob.model_validate({
        "metadata": {"name": "next", "namespace": "team-a", "uid": "next-0000-4000-8000-000000000000"},
        "spec": {"model": {"source": "/models/m"}, "dataset": {"source": "/data/d.csv"},
                 "serving": {"endpoint": "sentiment", "promotion": "always"}},
    })
    result = TrainingResult(job_name="next", status="succeeded", metric="eval_accuracy", mode="max", best_score=0.9,
                            model_uri="/storage/next/model", started_at="a", finished_at="b")
    promote(kube, store, job, result, "http://ep")  # type: ignore[arg-type]
    promoted = kube.find(k.MODELENDPOINTS, "team-a", "sentiment")
    assert promoted is not None and promoted["spec"]["model"]["uri"] == "/storage/next/model"
    assert promoted["spec"]["auth"] == {"bearerTokenSecret": {"name": "tok", "key": "token"}}


def test_the_rayservice_carries_the_token_as_a_secret_reference_only() -> None:
    from graft.operator.builders import build_rayservice
    from graft.operator.settings import OperatorSettings

    ep = parse_as(ModelEndpoint, {"metadata": {"name": "e", "namespace": "team-a", "uid": "u1"}, "spec": endpoint_spec()})
    cluster = build_rayservice(ep, OperatorSettings(ray_image="example.org/graft-ray:1"))["spec"]["rayClusterConfig"]
    containers = [c for g in [cluster["headGroupSpec"], *cluster["workerGroupSpecs"]] for c in g["template"]["spec"]["containers"]]
    entries = [e for c in containers for e in c.get("env", []) if e["name"] == BEARER_TOKEN_ENV]
    assert len(entries) == len(containers)
    assert all(e == {"name": BEARER_TOKEN_ENV, "valueFrom": {"secretKeyRef": {"name": "tok", "key": "token", "optional": False}}}
               for e in entries)
