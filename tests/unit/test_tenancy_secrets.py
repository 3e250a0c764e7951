"""Secret references of jobs and endpoints become pod env as named keys, never values nor whole
Secrets (issue 8 item 11, issue 21 finding 3)."""

from __future__ import annotations

import json

import pytest

from graft.api.endpoint import ModelEndpoint
from graft.api.policy import FineTunePolicy
from graft.api.result import TrainingResult
from graft.api.spec import FineTuneJob, RuntimeSpec
from graft.operator.admission import AdmissionContext, admit_endpoint
from graft.operator.builders.endpoint import build_endpoint
from graft.operator.builders.rayservice import build_rayservice
from graft.operator.builders.secrets import with_secret_env
from graft.operator.settings import OperatorSettings

pytestmark = [pytest.mark.unit, pytest.mark.tenancy]

CLUSTER = {
    "headGroupSpec": {"template": {"spec": {"containers": [{"name": "ray-head"}]}}},
    "workerGroupSpecs": [{"template": {"spec": {"containers": [{"name": "ray-worker", "env": [{"name": "A", "value": "1"}]}]}}}],
}


def test_every_ray_container_gets_the_references() -> None:
    runtime = RuntimeSpec.model_validate({"secretEnv": [{"name": "HF_TOKEN", "secretKeyRef": {"name": "hf", "key": "token"}}]})
    out = with_secret_env(CLUSTER, runtime.secret_env)
    head = out["headGroupSpec"]["template"]["spec"]["containers"][0]
    worker = out["workerGroupSpecs"][0]["template"]["spec"]["containers"][0]
    ref = {"name": "HF_TOKEN", "valueFrom": {"secretKeyRef": {"name": "hf", "key": "token", "optional": False}}}
    assert head["env"] == [ref] and worker["env"] == [{"name": "A", "value": "1"}, ref]
    assert "envFrom" not in head and "envFrom" not in worker  # never a whole Secret
    assert "value\": \"" not in json.dumps(head)  # only references


def test_no_references_leave_the_spec_unchanged() -> None:
    assert with_secret_env(CLUSTER, []) is CLUSTER


SECRET_REFS = {"secretEnv": [{"name": "AWS_SECRET_ACCESS_KEY", "secretKeyRef": {"name": "s3", "key": "secret"}}]}


def endpoint(**spec: object) -> ModelEndpoint:
    return ModelEndpoint.model_validate({"metadata": {"name": "ep", "namespace": "team-a", "uid": "u-1"},
                                         "spec": {"model": {"uri": "s3://models/team-a/ep"}, **spec}})


def admit(ep: ModelEndpoint, *policies: dict[str, object], settings: OperatorSettings | None = None) -> list[str]:
    ctx = AdmissionContext(
        namespace_labels={}, settings=settings or OperatorSettings(require_policy=False),
        policies=[FineTunePolicy.model_validate({"metadata": {"name": f"p{i}"}, "spec": p}) for i, p in enumerate(policies)],
    )
    return admit_endpoint(ep, ctx).violations


def test_every_serving_container_gets_the_endpoints_references() -> None:
    cluster = build_rayservice(endpoint(**SECRET_REFS), OperatorSettings())["spec"]["rayClusterConfig"]
    containers = [cluster["headGroupSpec"]["template"]["spec"]["containers"][0]] + [
        g["template"]["spec"]["containers"][0] for g in cluster["workerGroupSpecs"]]
    ref = {"name": "AWS_SECRET_ACCESS_KEY", "valueFrom": {"secretKeyRef": {"name": "s3", "key": "secret", "optional": False}}}
    for c in containers:
        assert ref in c["env"] and not c.get("envFrom")


def test_endpoint_secret_references_are_refused_on_a_shared_cluster() -> None:
    violations = admit(endpoint(cluster={"name": "shared"}, **SECRET_REFS))
    assert any(v.startswith("spec.secretEnv:") and "shared" in v for v in violations), violations


def test_endpoint_secret_keys_must_be_allowlisted() -> None:
    ep = endpoint(secretEnv=[{"name": "AWS_ENDPOINT_URL_S3", "secretKeyRef": {"name": "s3", "key": "endpoint"}}])
    violations = admit(ep, {"allowedEnvKeys": ["HF_*"]})
    assert any("spec.secretEnv: AWS_ENDPOINT_URL_S3 is not allowed by allowedEnvKeys" in v for v in violations), violations
    assert admit(endpoint(**SECRET_REFS), {"allowedEnvKeys": ["HF_*"]}) == []  # a default credential name


def test_endpoint_secret_references_cannot_override_an_operator_serve_env_key() -> None:
    ep = endpoint(secretEnv=[{"name": "MODEL_CACHE", "secretKeyRef": {"name": "s", "key": "k"}}])
    violations = admit(ep, settings=OperatorSettings(serve_env={"MODEL_CACHE": "/cache"}, require_policy=False))
    assert any("MODEL_CACHE is set by the operator (--serve-env)" in v for v in violations), violations


def test_a_promoted_endpoint_carries_the_jobs_secret_references() -> None:
    job = FineTuneJob.model_validate({
        "metadata": {"name": "ft", "namespace": "team-a"},
        "spec": {"model": {"source": "/models/m"}, "dataset": {"source": "s3://data/d.csv"}, "runtime": SECRET_REFS},
    })
    result = TrainingResult.model_validate({"jobName": "ft", "status": "succeeded", "metric": "eval_accuracy", "mode": "max",
                                            "bestScore": 0.9, "modelUri": "s3://models/team-a/ft/model",
                                            "startedAt": "2026-01-01T00:00:00Z", "finishedAt": "2026-01-01T00:10:00Z"})
    spec = build_endpoint(job, result, "ft")["spec"]
    assert spec["secretEnv"] == [{"name": "AWS_SECRET_ACCESS_KEY", "secretKeyRef": {"name": "s3", "key": "secret", "optional": False}}]
    assert "envFromSecrets" not in spec
