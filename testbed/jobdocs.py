"""Small FineTuneJob documents and data for runs of graft.jobs on a local Ray (the e2e tests and
bench/resume.py): a tiny job on the real all-MiniLM-L6-v2 and an easily separable sentiment set."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

POSITIVE = [
    "a great and wonderful film", "excellent acting and a superb story", "I loved it, truly wonderful",
    "brilliant, charming and fun", "a delightful, excellent movie", "superb, great, moving",
]
NEGATIVE = [
    "a terrible and awful film", "dreadful acting and a boring story", "I hated it, truly awful",
    "dull, painful and bad", "a miserable, terrible movie", "awful, bad, boring",
]


def write_sentiment_jsonl(path: Path, rows_per_label: int = 24, seed: int = 0) -> Path:
    """A small, easily separable positive/negative dataset with string labels."""
    rng = random.Random(seed)
    rows = [{"text": rng.choice(POSITIVE), "label": "positive"} for _ in range(rows_per_label)]
    rows += [{"text": rng.choice(NEGATIVE), "label": "negative"} for _ in range(rows_per_label)]
    rng.shuffle(rows)
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return path


def tiny_job(model: Path, data: Path, name: str = "tiny", **spec_overrides: Any) -> dict[str, Any]:
    """A FineTuneJob document on tiny settings (1 worker, 32 tokens, a few steps per epoch)."""
    spec: dict[str, Any] = {
        "model": {"source": str(model)},
        "dataset": {"source": str(data), "labelNames": ["negative", "positive"], "validation": {"fraction": 0.25}, "seed": 3},
        "training": {
            "epochs": 1, "batchSize": 8, "learningRate": 1e-3, "maxSeqLength": 32, "maxStepsPerEpoch": 3,
            "precision": "auto", "deepspeed": {"zeroStage": 2},
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
