"""The objects the builders generate are accepted by the real API server with the official KubeRay
v1.6 CRDs under strict field validation (no unknown or dropped fields)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from graft.api import ModelEndpoint, TrainingResult
from graft.api.load import parse_as
from graft.api.result import ResumeRecord
from graft.operator.builders import build_rayjob, build_rayservice
from graft.operator.settings import OperatorSettings
from testbed.controlplane import ControlPlane
from tests.integration.helpers import example_job, rayjob_examples

pytestmark = pytest.mark.integration

SETTINGS = OperatorSettings(ray_image="example.org/graft-ray:test", storage_pvc="graft-shared", service_account="ray")
EXAMPLES = rayjob_examples()


def dry_run_create(cp: ControlPlane, doc: dict, namespace: str) -> str:
    p = cp.kubectl("create", "--dry-run=server", "--validate=strict", "-n", namespace, "-o", "yaml", "-f", "-",
                   input=yaml.safe_dump(doc), check=False)
    assert p.returncode == 0, p.stderr
    return p.stdout


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_the_rayjob_of_every_example_passes_strict_validation(
    graft_crds: ControlPlane, namespace: str, path: Path
) -> None:
    job = example_job(path, namespace, "00000000-0000-0000-0000-000000000001")
    created = yaml.safe_load(dry_run_create(graft_crds, build_rayjob(job, SETTINGS), namespace))
    workers = created["spec"]["rayClusterSpec"]["workerGroupSpecs"][0]
    assert workers["replicas"] == job.spec.resources.workers


def test_rayservice_passes_strict_validation(graft_crds: ControlPlane, namespace: str) -> None:
    ep = parse_as(ModelEndpoint, {
        "metadata": {"name": "sentiment", "namespace": namespace, "uid": "00000000-0000-0000-0000-000000000002"},
        "spec": {"model": {"uri": "s3://bucket/model", "score": 0.9, "metric": "eval_accuracy", "version": 2},
                 "serving": {"minReplicas": 1, "maxReplicas": 3, "resources": {"cpus": 2, "memory": "3Gi"}}},
    })
    created = yaml.safe_load(dry_run_create(graft_crds, build_rayservice(ep, SETTINGS), namespace))
    assert created["spec"]["upgradeStrategy"]["type"] == "NewCluster"
    assert "graft.serving.app:build_app" in created["spec"]["serveConfigV2"]


def test_a_field_kuberay_does_not_know_is_refused(graft_crds: ControlPlane, namespace: str) -> None:
    """The check above has teeth: strict validation refuses an unknown field."""
    job = example_job(EXAMPLES[0], namespace, "00000000-0000-0000-0000-000000000003")
    doc = build_rayjob(job, SETTINGS)
    doc["spec"]["enableInServiceAutoscaling"] = True
    p = graft_crds.kubectl("create", "--dry-run=server", "--validate=strict", "-n", namespace, "-f", "-",
                           input=yaml.safe_dump(doc), check=False)
    assert p.returncode != 0 and "enableInServiceAutoscaling" in p.stderr


def test_the_result_in_a_jobs_status_keeps_its_nested_objects(graft_crds: ControlPlane, namespace: str) -> None:
    """status.result holds the result document (resumes, best config, phase seconds): the API server
    must store it whole, not prune the fields of its nested objects."""
    result = TrainingResult(
        job_name="kept", status="succeeded", metric="eval_accuracy", mode="max", best_score=0.9, started_at="a",
        finished_at="b", best_config={"learning_rate": 0.001}, best_metrics={"eval_accuracy": 0.9},
        phase_seconds={"tuning": 12.5}, attempt=2,
        resumes=[ResumeRecord(attempt=2, kind="attempt", at="2026-12-01T00:00:00Z", trials_resumed={"t1": 2})],
    ).model_dump(mode="json", by_alias=True, exclude_none=True, exclude={"trials"})
    job = {"apiVersion": "graft.dev/v1alpha1", "kind": "FineTuneJob", "metadata": {"name": "kept"},
           "spec": {"model": {"source": "/models/m"}, "dataset": {"source": "/data/d.csv"}}}
    graft_crds.kubectl("create", "-n", namespace, "-f", "-", input=yaml.safe_dump(job))
    graft_crds.kubectl("patch", "finetunejob", "kept", "-n", namespace, "--subresource=status", "--type=merge",
                       "-p", json.dumps({"status": {"result": result}}))
    stored = graft_crds.kubectl_json("get", "finetunejob", "kept", "-n", namespace)["status"]["result"]
    assert stored == result
