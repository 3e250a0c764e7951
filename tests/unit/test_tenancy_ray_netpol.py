"""The NetworkPolicy of each Ray cluster Graft creates (issue 21, finding 5): its pods admit ingress
only from the cluster's own pods, KubeRay's submitter pod, the operators the chart names, and (a
RayService) anyone on the Serve port; a pod of another namespace matches no rule."""

from __future__ import annotations

from typing import Any

import pytest

from graft.operator.backends.rayjob import RayJobBackend, RayServiceBackend
from graft.operator.cache import Store
from graft.operator.settings import OperatorSettings
from tests.unit.fake_kube import FakeKube
from tests.unit.test_operator_builders import endpoint, job

pytestmark = [pytest.mark.unit, pytest.mark.tenancy]

OPERATORS = [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "graft-system"}},
              "podSelector": {"matchLabels": {"app.kubernetes.io/name": "graft"}}}]
SETTINGS = OperatorSettings(ray_image="example.org/graft-ray:test", ray_ingress_from=OPERATORS)


def policy_of_job(settings: OperatorSettings = SETTINGS) -> dict[str, Any] | None:
    kube = FakeKube()
    RayJobBackend(kube, Store(), settings).act(job(), None, None)  # type: ignore[arg-type]  # obs is unused on create
    return kube.network_policies.get(("team-a", "demo-ray-ingress"))


def test_a_rayjob_cluster_admits_its_own_pods_its_submitter_and_the_operators_only() -> None:
    policy = policy_of_job()
    assert policy is not None
    assert policy["spec"]["podSelector"] == {"matchLabels": {"graft.dev/finetunejob": "demo"}}
    assert policy["spec"]["policyTypes"] == ["Ingress"]
    assert policy["spec"]["ingress"] == [
        {"from": [{"podSelector": {"matchLabels": {"graft.dev/finetunejob": "demo"}}},
                  {"podSelector": {"matchLabels": {"batch.kubernetes.io/job-name": "demo"}}}]},
        {"from": OPERATORS},
    ]
    assert policy["metadata"]["ownerReferences"][0]["uid"] == "0123456789abcdef"


def test_no_rule_admits_a_pod_of_another_namespace() -> None:
    """Pod selectors without a namespaceSelector match only the policy's own namespace; the only
    namespaceSelectors are the operators' (chart-given, exact namespace names)."""
    policy = policy_of_job()
    assert policy is not None
    peers = [p for rule in policy["spec"]["ingress"] for p in rule.get("from", [])]
    assert [p for p in peers if "namespaceSelector" in p] == OPERATORS
    assert all("ports" not in rule for rule in policy["spec"]["ingress"])  # no port is open to all


def test_a_rayservice_cluster_keeps_only_its_serve_port_open_to_all() -> None:
    kube = FakeKube()
    RayServiceBackend(kube, Store(), SETTINGS).apply(endpoint())
    policy = kube.network_policies[("team-a", "sentiment-ray-ingress")]
    assert policy["spec"]["podSelector"] == {"matchLabels": {"graft.dev/modelendpoint": "sentiment"}}
    open_rules = [rule for rule in policy["spec"]["ingress"] if "from" not in rule]
    assert open_rules == [{"ports": [{"port": 8000, "protocol": "TCP"}]}]


def test_without_peers_from_the_chart_no_policy_is_created() -> None:
    assert policy_of_job(OperatorSettings(ray_image="example.org/graft-ray:test")) is None
