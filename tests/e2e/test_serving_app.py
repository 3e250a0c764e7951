"""The Serve application on a real local Ray: real model, real HTTP, real @serve.batch.

Uses the session's local Ray (`ray_cluster` in tests/e2e/conftest.py) and shuts Serve down after.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from graft.api.spec import ServingSpec
from testbed.ports import free_port

pytestmark = pytest.mark.e2e

APP = "graft-serving-e2e"
PREFIX = "/sentiment"
LABELS = ["negative", "positive"]
POSITIVE = ["great wonderful excellent", "a wonderful and excellent film", "great acting, excellent story",
            "I loved it, wonderful", "excellent, great, superb", "what a great wonderful movie"]
NEGATIVE = ["awful terrible bad", "a terrible and awful film", "bad acting, awful story",
            "I hated it, terrible", "awful, bad, dreadful", "what a bad terrible movie"]


def fine_tune_tiny_classifier(base: Path, out_dir: Path, *, max_steps: int = 15, target_loss: float = 0.15) -> Path:
    """Fine-tune the real all-MiniLM-L6-v2 with a 2-label head on trivially separable sentences
    (plain torch, a few full-batch AdamW steps) and export it as a Hugging Face directory."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    torch.manual_seed(0)
    tokenizer = AutoTokenizer.from_pretrained(base)
    model = AutoModelForSequenceClassification.from_pretrained(
        base, num_labels=2, id2label=dict(enumerate(LABELS)), label2id={n: i for i, n in enumerate(LABELS)}
    )
    model.base_model.embeddings.requires_grad_(False)  # fewer weights to update; the encoder still adapts
    batch = tokenizer(POSITIVE + NEGATIVE, padding=True, return_tensors="pt")
    labels = torch.tensor([1] * len(POSITIVE) + [0] * len(NEGATIVE))
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=3e-4)
    model.train()
    for _ in range(max_steps):
        loss = model(**batch, labels=labels).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        if loss.item() < target_loss:
            break
    assert loss.item() < 0.5, f"the tiny fine-tune did not converge (loss {loss.item():.3f})"
    model.eval()
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return out_dir


@pytest.fixture(scope="module")
def exported_model(minilm_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    return fine_tune_tiny_classifier(minilm_path, tmp_path_factory.mktemp("exported") / "model")


@pytest.fixture(scope="module")
def endpoint(ray_cluster: dict[str, float], exported_model: Path) -> Iterator[str]:
    from graft.serving.deploy import deploy_local, shutdown_local

    serving = ServingSpec.model_validate(
        {"minReplicas": 1, "maxReplicas": 1, "maxTextLength": 200, "batching": {"maxBatchSize": 8, "batchWaitTimeoutS": 0.1}}
    )
    url = deploy_local(exported_model.as_uri(), serving, app_name=APP, route_prefix=PREFIX, http_port=free_port(),
                       model_version=3)
    try:
        yield url
    finally:
        shutdown_local()


def predict(url: str, body: Any) -> httpx.Response:
    return httpx.post(f"{url}/predict", json=body, timeout=60)


def eventually_status(url: str, status: int, timeout_s: float = 30.0) -> bool:
    """Poll GET `url` until it answers `status` (the proxy's route table updates asynchronously)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if httpx.get(url, timeout=10).status_code == status:
            return True
        time.sleep(0.2)
    return False


def healthz(url: str) -> dict[str, Any]:
    response = httpx.get(f"{url}/healthz", timeout=30)
    assert response.status_code == 200, response.text
    return dict(response.json())


def test_the_endpoint_url_carries_the_route_prefix(endpoint: str) -> None:
    assert endpoint.startswith("http://127.0.0.1:") and endpoint.endswith(PREFIX)


def test_healthz_reports_the_loaded_model(endpoint: str, exported_model: Path) -> None:
    info = healthz(endpoint)
    assert info["status"] == "ok"
    assert info["labels"] == LABELS
    assert info["model_version"] == 3
    assert Path(info["model_dir"]) == exported_model
    assert info["device"] == "cpu" and info["torch_threads"] == 1
    assert info["batching"]["max_batch_size"] == 8 and info["batching"]["batch_wait_timeout_s"] == 0.1


def test_a_positive_text_is_labelled_positive_with_softmax_scores(endpoint: str) -> None:
    response = predict(endpoint, {"text": "an excellent, wonderful movie"})
    assert response.status_code == 200, response.text
    body = response.json()
    [pred] = body["predictions"]
    assert pred["label"] == "positive"
    assert set(pred["scores"]) == set(LABELS)
    assert pred["scores"]["positive"] > pred["scores"]["negative"]
    assert sum(pred["scores"].values()) == pytest.approx(1.0, abs=1e-5)
    assert body["model_version"] == 3


def test_a_negative_text_is_labelled_negative(endpoint: str) -> None:
    response = predict(endpoint, {"text": "a terrible, awful movie"})
    assert response.status_code == 200, response.text
    assert response.json()["predictions"][0]["label"] == "negative"


def test_texts_get_one_prediction_each_in_order(endpoint: str) -> None:
    response = predict(endpoint, {"texts": ["what a terrible film", "wonderful, great acting", "bad and awful"]})
    assert response.status_code == 200, response.text
    assert [p["label"] for p in response.json()["predictions"]] == ["negative", "positive", "negative"]


@pytest.mark.parametrize(
    ("content", "status", "fragment"),
    [
        (b"{not json", 400, "not valid JSON"),
        (b"", 400, "request body is empty"),
        (b'{"texts": "one string"}', 422, "texts must be a list of strings"),
        (b'{"text": ""}', 422, "text is empty"),
        (b'{"text": 42}', 422, "text must be a string"),
        (b'{"review": "great"}', 422, "unknown field(s) review"),
        (b"{}", 422, "missing field text"),
        (b'{"texts": []}', 422, "texts is an empty list"),
        (b'{"text": "' + b"a" * 201 + b'"}', 413, "more than the limit of 200"),
        (b'{"texts": [' + b",".join([b'"ok"'] * 65) + b"]}", 413, "texts has 65 items"),
        (b'{"text": "' + b"a" * 200_000 + b'"}', 413, "bytes, more than the limit of"),
    ],
)
def test_a_bad_request_is_a_client_error_that_says_what_to_fix(endpoint: str, content: bytes, status: int, fragment: str) -> None:
    response = httpx.post(f"{endpoint}/predict", content=content, headers={"content-type": "application/json"}, timeout=60)
    assert response.status_code == status, response.text
    assert fragment in response.json()["error"]


async def _burst(url: str, n: int) -> list[httpx.Response]:
    async with httpx.AsyncClient(timeout=120) as client:
        return await asyncio.gather(*(client.post(f"{url}/predict", json={"text": f"great wonderful film {i}"}) for i in range(n)))


def test_kserve_v1_instances_get_predictions(endpoint: str) -> None:
    response = httpx.post(f"{endpoint}/v1/models/{APP}:predict", json={"instances": ["a terrible film", "wonderful, great"]},
                          timeout=60)
    assert response.status_code == 200, response.text
    assert [p["label"] for p in response.json()["predictions"]] == ["negative", "positive"]


def test_open_inference_v2_infer_returns_label_and_score_tensors(endpoint: str) -> None:
    body = {"id": "q1", "inputs": [{"name": "text", "shape": [2], "datatype": "BYTES",
                                    "data": ["an excellent, wonderful movie", "a terrible, awful movie"]}]}
    response = httpx.post(f"{endpoint}/v2/models/{APP}/infer", json=body, timeout=60)
    assert response.status_code == 200, response.text
    out = response.json()
    assert (out["model_name"], out["model_version"], out["id"]) == (APP, "3", "q1")
    labels, scores = out["outputs"]
    assert labels["data"] == ["positive", "negative"]
    assert scores["shape"] == [2, 2] and sum(scores["data"][:2]) == pytest.approx(1.0, abs=1e-5)


def test_open_inference_v2_metadata_and_an_unknown_model_404(endpoint: str) -> None:
    meta = httpx.get(f"{endpoint}/v2/models/{APP}", timeout=30)
    assert meta.status_code == 200 and meta.json()["inputs"][0]["datatype"] == "BYTES"
    missing = httpx.post(f"{endpoint}/v2/models/other/infer", json={"inputs": []}, timeout=30)
    assert missing.status_code == 404 and APP in missing.json()["error"]


def test_tei_inputs_get_scores_sorted_per_text(endpoint: str) -> None:
    response = predict(endpoint, {"inputs": ["a terrible, awful movie"]})
    assert response.status_code == 200, response.text
    [[best, other]] = response.json()
    assert best["label"] == "negative" and best["score"] > other["score"]


def test_concurrent_requests_share_forward_passes_through_serve_batch(endpoint: str) -> None:
    before = healthz(endpoint)["batching"]
    responses = asyncio.run(_burst(endpoint, 16))
    after = healthz(endpoint)["batching"]
    assert all(r.status_code == 200 for r in responses), [r.text for r in responses if r.status_code != 200]
    texts, batches = after["texts"] - before["texts"], after["batches"] - before["batches"]
    assert texts == 16
    assert batches < texts, f"16 single-text requests ran in {batches} forward passes; @serve.batch did not group them"
    assert after["largest_batch"] > 1


def test_a_second_application_shares_the_running_proxy_and_is_deleted_alone(endpoint: str, exported_model: Path) -> None:
    from graft.serving.deploy import deploy_local, shutdown_local

    first_port = httpx.URL(endpoint).port
    url = deploy_local(str(exported_model), ServingSpec(), app_name=f"{APP}-2", route_prefix="/second",
                       http_port=free_port(), label_names=["neg", "pos"])
    try:
        assert httpx.URL(url).port == first_port and url.endswith("/second")
        assert healthz(url)["labels"] == ["neg", "pos"]
        assert predict(url, {"text": "awful terrible film"}).json()["predictions"][0]["label"] == "neg"
    finally:
        shutdown_local(f"{APP}-2")
    assert eventually_status(f"{url}/healthz", 404), "the deleted application still answers"
    assert healthz(endpoint)["status"] == "ok"


def wait_app_status(app_name: str, wanted: set[str], timeout_s: float = 180.0) -> Any:
    """Poll serve.status() until the application reaches one of `wanted`; return its status overview."""
    from ray import serve

    deadline = time.monotonic() + timeout_s
    app = None
    while time.monotonic() < deadline:
        app = serve.status().applications.get(app_name)
        if app is not None and app.status in wanted:
            return app
        time.sleep(0.5)
    raise AssertionError(f"{app_name} did not reach {wanted} in {timeout_s:.0f} s: {app}")


def test_the_serve_config_entry_deploys_declaratively_like_the_rest_api_and_rayservice(endpoint: str, exported_model: Path) -> None:
    """What `PUT /api/serve/applications/` does (serve_start + deploy_apps) with a serve_config entry:
    Serve imports `graft.serving.app:build_app`, passes the camelCase args, applies the deployment options."""
    from ray import serve
    from ray.serve._private.api import serve_start
    from ray.serve.schema import ServeDeploySchema

    from graft.serving.args import ServeArgs, serve_config

    port = httpx.URL(endpoint).port
    serving = ServingSpec.model_validate({"minReplicas": 1, "maxReplicas": 1})
    good = serve_config(ServeArgs.from_serving(exported_model.as_uri(), serving, model_version="cfg-1"),
                        app_name=f"{APP}-cfg", route_prefix="/cfg", serving=serving, env={"HF_HUB_OFFLINE": "1"})
    client = serve_start(http_options={"host": "127.0.0.1", "port": port})
    client.deploy_apps(ServeDeploySchema.model_validate({"applications": [good]}))
    try:
        wait_app_status(f"{APP}-cfg", {"RUNNING"})
        url = f"http://127.0.0.1:{port}/cfg"
        assert eventually_status(f"{url}/healthz", 200)
        body = predict(url, {"text": "a wonderful, excellent story"}).json()
        assert body["predictions"][0]["label"] == "positive" and body["model_version"] == "cfg-1"
    finally:
        serve.delete(f"{APP}-cfg")
