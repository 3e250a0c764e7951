"""The examples as shipped, on the real node through the operator, as a tenant would run them:

* `kubectl apply -f examples/image-classification.yaml -f examples/distillation.yaml` in one go:
  the student (`finetunejob://fashion-mnist` as model and teacher) waits while the teacher trains
  on the Fashion-MNIST files of the Ray image, then trains a smaller student from the teacher's
  model on the shared storage; the student's endpoint classifies real Fashion-MNIST test photos
  sent as raw PNG bodies to its Serve Service (the teacher's, promoted too, is deleted unchecked
  to give the student the node's cores; both answered in the run of docs/testing-control-plane.md);
* `examples/causal-lm.yaml`, its training cut to two steps (as shipped it trains for 6 min here):
  SFT with LoRA of SmolLM2-135M in a RayJob, then an OpenAI-compatible RayService the official
  OpenAI client talks to (plain and streamed).

The node has 2 cores: a serving endpoint and a training job do not both fit, so each endpoint is
deleted once checked (the job and its model stay). The tests run in order on module fixtures.
"""

from __future__ import annotations

import gzip
import io
import json
import time
import urllib.request
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import pytest
import yaml

from graft.operator.names import ray_name
from testbed.addons import KubeRayOperator
from testbed.controlplane import ControlPlane
from testbed.kubenode import KubeNode
from testbed.process import wait_until
from tests.kuberay.diagnose import diagnose
from tests.kuberay.release import REPO, Release, installed, service_url

pytestmark = [pytest.mark.e2e, pytest.mark.kuberay, pytest.mark.slow, pytest.mark.timeout(2400)]

EXAMPLES = REPO / "examples"
IMAGE, STUDENT, LLM = (yaml.safe_load((EXAMPLES / f).read_text()) for f in
                       ("image-classification.yaml", "distillation.yaml", "causal-lm.yaml"))
FASHION = Path("/usr/share/datasets/fashion-mnist")
TEST_PHOTOS = 20  # the first photos of Fashion-MNIST's test set (never trained on)
TRAIN_TIMEOUT = 1500


@pytest.fixture(scope="module")
def release(control_plane: ControlPlane, kube_node: KubeNode, kuberay_operator: KubeRayOperator,
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[Release]:
    with installed(control_plane, kube_node, tmp_path_factory.mktemp("graft-storage"), "examples") as rel:
        yield rel


def _state(release: Release, waiting_for: str) -> Callable[[], str]:
    return lambda: f"{waiting_for}; state: {diagnose(release)}"


def _status(release: Release, name: str) -> dict[str, Any]:
    return (release.get("finetunejob", name) or {}).get("status") or {}


def _ended(release: Release, name: str, timeout: float = TRAIN_TIMEOUT, on_poll: Callable[[], None] = lambda: None) -> dict[str, Any]:
    t0 = time.monotonic()

    def step() -> dict[str, Any] | None:
        on_poll()
        st = _status(release, name)
        return st if st.get("phase") in ("Succeeded", "Failed", "Rejected") else None

    st = wait_until(step, timeout=timeout, interval=3, what=_state(release, f"FineTuneJob {name} to finish"))
    release.timings[f"{name}: -> {st['phase']}"] = time.monotonic() - t0
    return st


def _endpoint_url(release: Release, endpoint: str, probe: Callable[[str], Any]) -> str:
    """The URL of the endpoint's Serve Service once the ModelEndpoint is Ready and `probe` passes."""
    t0 = time.monotonic()

    def ready() -> str | None:
        ep = release.get("modelendpoint", endpoint) or {}
        if (ep.get("status") or {}).get("phase") != "Ready":
            return None
        if release.get("service", f"{ray_name(endpoint)}-serve-svc") is None:
            return None
        url = service_url(release, f"{ray_name(endpoint)}-serve-svc", "serve")
        probe(url)
        return url

    url = wait_until(ready, timeout=900, interval=5, what=_state(release, f"ModelEndpoint {endpoint} to answer"))
    release.timings[f"{endpoint}: Succeeded -> endpoint answering"] = time.monotonic() - t0
    return url


def _drop_endpoint(release: Release, endpoint: str) -> None:
    """Delete the endpoint (its RayService goes with it) to free the node's cores for the next job."""
    release.kubectl("delete", "modelendpoint", endpoint, "-n", release.tenant, "--ignore-not-found", "--wait=true", "--timeout=180s")


# ---- Fashion-MNIST test photos, as PNG files


def _idx(path: Path, header: int) -> np.ndarray:
    with gzip.open(path, "rb") as fh:
        return np.frombuffer(fh.read(), dtype=np.uint8, offset=header)


def fashion_photos() -> list[tuple[str, bytes]]:
    from PIL import Image

    images = _idx(FASHION / "t10k-images-idx3-ubyte.gz", 16).reshape(-1, 28, 28)[:TEST_PHOTOS]
    labels = _idx(FASHION / "t10k-labels-idx1-ubyte.gz", 8)[:TEST_PHOTOS]
    names = IMAGE["spec"]["dataset"]["labelNames"]
    out = []
    for image, label in zip(images, labels):
        buf = io.BytesIO()
        Image.fromarray(image, mode="L").save(buf, format="PNG")
        out.append((names[int(label)], buf.getvalue()))
    return out


def classify(url: str, png: bytes) -> str:
    req = urllib.request.Request(f"{url}/predict", data=png, headers={"content-type": "image/png"}, method="POST")
    with urllib.request.urlopen(req, timeout=60) as resp:
        return str(json.loads(resp.read())["predictions"][0]["label"])


def accuracy(url: str) -> float:
    photos = fashion_photos()
    return sum(classify(url, png) == label for label, png in photos) / len(photos)


# ---- the image classifier and its distilled student


@pytest.fixture(scope="module")
def teacher(release: Release) -> dict[str, Any]:
    """Both image examples applied at once; the teacher followed to its end, the student's
    conditions recorded on the way."""
    seen: dict[str, Any] = {"student_reasons": set()}
    release.kubectl("apply", "-n", release.tenant, "-f", str(EXAMPLES / "image-classification.yaml"),
                    "-f", str(EXAMPLES / "distillation.yaml"))

    def watch_student() -> None:
        for c in _status(release, STUDENT["metadata"]["name"]).get("conditions") or []:
            if c["type"] == "Accepted":
                seen["student_reasons"].add(c["reason"])

    seen["status"] = _ended(release, IMAGE["metadata"]["name"], on_poll=watch_student)
    return seen


@pytest.fixture(scope="module")
def student(release: Release, teacher: dict[str, Any]) -> dict[str, Any]:
    """The student followed to its end. The teacher's endpoint is deleted first: on a 2-core node
    its RayService and the student's training do not fit together (the student's endpoint shows
    that an image model is served)."""
    _drop_endpoint(release, IMAGE["spec"]["serving"]["endpoint"])
    return _ended(release, STUDENT["metadata"]["name"])


def test_the_image_example_trains_on_the_images_fashion_mnist(teacher: dict[str, Any]) -> None:
    st = teacher["status"]
    assert st["phase"] == "Succeeded", st
    assert float(st["bestMetric"]) > 0.5, st["bestMetric"]  # 10 classes: chance is 0.1


def test_the_student_waits_for_its_teacher(teacher: dict[str, Any]) -> None:
    assert "WaitingForFineTuneJob" in teacher["student_reasons"], teacher["student_reasons"]


def test_the_teacher_is_promoted_to_its_endpoint(teacher: dict[str, Any]) -> None:
    promotion = teacher["status"].get("promotion") or {}
    assert promotion.get("decision") == "promoted" and promotion.get("endpoint") == IMAGE["spec"]["serving"]["endpoint"], promotion


def test_the_student_trains_from_the_teachers_model_and_is_smaller(teacher: dict[str, Any], student: dict[str, Any]) -> None:
    assert student["phase"] == "Succeeded", student
    model = teacher["status"]["modelUri"]
    assert student["admitted"]["references"] == {"spec.model.source": model, "spec.distillation.teacher": model}
    report = student["result"]["distillation"]
    assert report["studentParameters"] < report["teacherParameters"], report


def test_the_student_endpoint_classifies_real_fashion_mnist_photos(release: Release, student: dict[str, Any]) -> None:
    endpoint = STUDENT["spec"]["serving"]["endpoint"]
    try:
        url = _endpoint_url(release, endpoint, lambda u: classify(u, fashion_photos()[0][1]))
        assert accuracy(url) >= 0.6
    finally:
        _drop_endpoint(release, endpoint)


# ---- the causal LM and its OpenAI-compatible endpoint


def llm_test_sized() -> dict[str, Any]:
    """examples/causal-lm.yaml with its training cut to one trial of two steps: the same model,
    data, LoRA, RayJob and OpenAI endpoint. As shipped (2 trials of 2 x 6 steps) it trains for
    about 6 min on this node, too long for CI's 90 minutes; that run is in
    docs/testing-control-plane.md."""
    doc = json.loads(json.dumps(LLM))
    doc["spec"]["training"].update({"epochs": 1, "maxStepsPerEpoch": 2})
    doc["spec"]["tuning"]["numTrials"] = 1
    return doc


@pytest.fixture(scope="module")
def llm(release: Release) -> Iterator[tuple[dict[str, Any], str]]:
    release.kubectl("apply", "-n", release.tenant, "-f", "-", input=json.dumps(llm_test_sized()))
    st = _ended(release, LLM["metadata"]["name"])
    endpoint = LLM["spec"]["serving"]["endpoint"]

    def models(url: str) -> None:
        with urllib.request.urlopen(f"{url}/v1/models", timeout=30) as resp:
            assert resp.status == 200

    try:
        yield st, (_endpoint_url(release, endpoint, models) if st.get("phase") == "Succeeded" else "")
    finally:
        _drop_endpoint(release, endpoint)


def test_the_causal_lm_job_trains_in_a_rayjob_and_exports_a_model(llm: tuple[dict[str, Any], str]) -> None:
    st, _ = llm
    assert st["phase"] == "Succeeded" and st["metric"] == "eval_loss" and st.get("modelUri"), st


def test_the_openai_client_chats_with_the_served_model(llm: tuple[dict[str, Any], str]) -> None:
    from openai import OpenAI

    _, url = llm
    assert url, "the causal-LM job did not succeed"
    client = OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0, timeout=120)
    model = LLM["spec"]["serving"]["endpoint"]
    reply = client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": "What is the capital of Peru?"}], max_tokens=16, temperature=0)
    assert reply.choices[0].message.content and reply.usage is not None and 0 < reply.usage.completion_tokens <= 16
    stream = client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": "Name a colour."}], max_tokens=8, stream=True,
        stream_options={"include_usage": True})
    chunks = list(stream)
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0
