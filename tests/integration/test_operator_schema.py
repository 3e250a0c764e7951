"""The objects the builders generate are accepted by the real API server with the official KubeRay
v1.5 CRDs under strict field validation (no unknown or dropped fields)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from graft.api import ModelEndpoint
from graft.api.load import parse_as
from graft.operator.builders import build_rayjob, build_rayservice
from graft.operator.settings import OperatorSettings
from tests.controlplane import ControlPlane
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
