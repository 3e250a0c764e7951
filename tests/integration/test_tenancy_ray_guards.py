"""What the operator creates for each Ray cluster passes the real API server under strict validation:
the RayJob's `authOptions` (KubeRay v1.6 CRDs; v1.5 had no such field), the token Secret and the
NetworkPolicy (graft.operator.rayauth, graft.operator.builders.netpol)."""

from __future__ import annotations

import pytest
import yaml

from graft.operator.builders import build_rayjob
from graft.operator.builders.netpol import ray_network_policy
from graft.operator.names import job_labels, owner_reference
from graft.operator.rayauth import auth_secret
from graft.operator.settings import OperatorSettings
from testbed.controlplane import ControlPlane
from tests.integration.helpers import example_job, rayjob_examples
from tests.integration.test_operator_schema import dry_run_create

pytestmark = [pytest.mark.integration, pytest.mark.tenancy]

SETTINGS = OperatorSettings(ray_image="example.org/graft-ray:test")
UID = "00000000-0000-0000-0000-000000000004"
OWNER = owner_reference("graft.dev/v1alpha1", "FineTuneJob", "demo", UID)
OPERATORS = [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "graft-system"}},
              "podSelector": {"matchLabels": {"app.kubernetes.io/name": "graft"}}}]


def test_the_rayjob_keeps_its_token_authentication(graft_crds: ControlPlane, namespace: str) -> None:
    job = example_job(rayjob_examples()[0], namespace, UID)
    created = yaml.safe_load(dry_run_create(graft_crds, build_rayjob(job, SETTINGS), namespace))
    assert created["spec"]["rayClusterSpec"]["authOptions"]["mode"] == "token"


def test_the_token_secret_is_accepted(control_plane: ControlPlane, namespace: str) -> None:
    body = auth_secret(namespace=namespace, ray_name="demo", token="t" * 64, labels=job_labels("demo"), owner=OWNER)
    created = yaml.safe_load(dry_run_create(control_plane, body, namespace))
    assert created["metadata"]["name"] == "demo-ray-auth" and set(created["data"]) == {"auth_token"}


def test_the_network_policy_is_accepted(control_plane: ControlPlane, namespace: str) -> None:
    body = ray_network_policy(namespace=namespace, ray_name="demo", owner=OWNER, labels=job_labels("demo"),
                              pod_selector={"graft.dev/finetunejob": "demo"}, peers=OPERATORS, serve_port=8000,
                              submitter=True)
    created = yaml.safe_load(dry_run_create(control_plane, body, namespace))
    assert created["spec"]["ingress"][1]["from"] == OPERATORS
