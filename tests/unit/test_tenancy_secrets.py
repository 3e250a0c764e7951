"""graft.operator.builders.secrets: Secret references become pod env/envFrom, never values (issue 8 item 11)."""

from __future__ import annotations

import json

import pytest

from graft.api.spec import RuntimeSpec
from graft.operator.builders.secrets import with_secret_env

pytestmark = [pytest.mark.unit, pytest.mark.tenancy]

CLUSTER = {
    "headGroupSpec": {"template": {"spec": {"containers": [{"name": "ray-head"}]}}},
    "workerGroupSpecs": [{"template": {"spec": {"containers": [{"name": "ray-worker", "env": [{"name": "A", "value": "1"}]}]}}}],
}


def test_every_ray_container_gets_the_references() -> None:
    runtime = RuntimeSpec.model_validate({"secretEnv": [{"name": "HF_TOKEN", "secretKeyRef": {"name": "hf", "key": "token"}}],
                                          "envFromSecrets": [{"name": "s3", "optional": True}]})
    out = with_secret_env(CLUSTER, runtime)
    head = out["headGroupSpec"]["template"]["spec"]["containers"][0]
    worker = out["workerGroupSpecs"][0]["template"]["spec"]["containers"][0]
    ref = {"name": "HF_TOKEN", "valueFrom": {"secretKeyRef": {"name": "hf", "key": "token", "optional": False}}}
    assert head["env"] == [ref] and worker["env"] == [{"name": "A", "value": "1"}, ref]
    assert head["envFrom"] == worker["envFrom"] == [{"secretRef": {"name": "s3", "optional": True}}]
    assert "value\": \"" not in json.dumps(head)  # only references


def test_no_references_leave_the_spec_unchanged() -> None:
    assert with_secret_env(CLUSTER, RuntimeSpec()) is CLUSTER
