"""The real `graft operator` run with nothing but the chart's RBAC: the ServiceAccount token of a
namespace-restricted install, the chart's own arguments, kopf peering. A job goes through its
whole life (RayJob, status, result, promotion to a ModelEndpoint and RayService, TTL deletion) and a
FineTunePolicy rejects another, without a single Forbidden."""

from __future__ import annotations

import secrets
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from testbed.controlplane import ControlPlane
from testbed.operator import OperatorProcess
from testbed.ports import free_port
from tests.integration.helpers import (
    FTJ,
    MEP,
    RJ,
    RS,
    apply,
    finetunejob,
    get,
    names,
    phase_is,
    set_rayjob_status,
    status,
    wait_for,
    write_result,
)
from tests.integration.rbac import apply_objects, operator_kubeconfig, render_chart

pytestmark = pytest.mark.integration

RELEASE, RELEASE_NS = "runas", "runas-system"
# Arguments the test harness sets itself (free ports, a fast resync, the namespace).
HARNESS_FLAGS = ("--liveness", "--metrics-port", "--resync-seconds", "--namespace")


RAY_AUTH_KEY_FLAG = "--ray-auth-key-file"


def chart_arguments(docs: list[dict[str, Any]], ray_auth_key: Path) -> list[str]:
    """The chart's operator arguments, less the harness's own, with the Ray auth key file (a Secret
    volume in the pod) at `ray_auth_key` on this machine."""
    deployment = next(d for d in docs if d["kind"] == "Deployment")
    args = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[0] == "operator"
    assert any(a.startswith(RAY_AUTH_KEY_FLAG) for a in args), "the chart no longer passes the Ray auth key file"
    return [f"{RAY_AUTH_KEY_FLAG}={ray_auth_key}" if a.startswith(RAY_AUTH_KEY_FLAG) else a
            for a in args[1:] if not a.startswith(HARNESS_FLAGS)]


@dataclass
class ChartOperator:
    process: OperatorProcess
    metrics_url: str

    @property
    def cp(self) -> ControlPlane:
        return self.process.cp

    def metric(self, name: str, **labels: str) -> float | None:
        """One sample from the operator's /metrics, or None when absent."""
        with urllib.request.urlopen(self.metrics_url, timeout=10) as resp:
            text = resp.read().decode()
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                    return sample.value
        return None


@pytest.fixture
def chart_operator(graft_crds: ControlPlane, namespace: str, tmp_path: Path) -> Iterator[ChartOperator]:
    """`graft operator` with the chart's arguments for watchNamespaces=[namespace], authenticated as
    the chart's ServiceAccount (runas-system/runas-graft), with the chart's KopfPeering."""
    cp = graft_crds
    values = {"watchNamespaces": [namespace], "tenancy": {"requirePolicy": False}}  # a single-team cluster
    kubeconfig = operator_kubeconfig(cp, tmp_path, values=values, release=RELEASE, namespace=RELEASE_NS)
    docs = render_chart(values, release=RELEASE, namespace=RELEASE_NS)
    apply_objects(cp, [d for d in docs if d["kind"] == "KopfPeering"])
    port = free_port()
    key = tmp_path / "ray-auth-key"
    key.write_text(secrets.token_hex(32))
    op = OperatorProcess(cp, namespace, tmp_path, *chart_arguments(docs, key), "--kubeconfig", str(kubeconfig),
                         "--metrics-port", str(port)).start()
    yield ChartOperator(op, f"http://127.0.0.1:{port}/metrics")
    op.stop()
    log = op.log_path.read_text(errors="replace")
    assert "Forbidden" not in log and "(403)" not in log, f"the operator hit RBAC refusals:\n{op.log_tail(80)}"


def test_whole_job_lifecycle_needs_only_the_chart_rbac(chart_operator: ChartOperator, namespace: str,
                                                       tmp_path: Path) -> None:
    cp, storage = chart_operator.cp, str(tmp_path / namespace / "storage")
    job = finetunejob("runas", storage=storage, serving={"endpoint": "runas", "promotion": "always"},
                      runtime={"ttlSecondsAfterFinished": 0})
    apply(cp, job, namespace)
    wait_for(lambda: get(cp, RJ, "runas", namespace), timeout=60, what="the RayJob")
    set_rayjob_status(cp, "runas", namespace, "Running", "RUNNING", jobId="runas-1", rayClusterName="runas-abcde",
                      startTime="2026-01-01T00:00:00Z")
    wait_for(phase_is(cp, FTJ, "runas", namespace, "Running"), what="Running")
    uid = cp.kubectl_json("get", FTJ, "runas", "-n", namespace)["metadata"]["uid"]
    write_result(storage, namespace, "runas", uid, score=0.9)
    set_rayjob_status(cp, "runas", namespace, "Complete", "SUCCEEDED")
    wait_for(phase_is(cp, FTJ, "runas", namespace, "Succeeded"), timeout=90, what="Succeeded")
    wait_for(lambda: get(cp, MEP, "runas", namespace), timeout=60, what="the promoted ModelEndpoint")
    wait_for(lambda: names(cp, RS, namespace), timeout=60, what="the endpoint's RayService")
    wait_for(lambda: get(cp, RJ, "runas", namespace) is None, timeout=60, what="TTL deletion of the RayJob")
    peering = next(d for d in render_chart({"watchNamespaces": [namespace]}, release=RELEASE, namespace=RELEASE_NS)
                   if d["kind"] == "KopfPeering")["metadata"]["name"]  # the release's full name
    peers = (get(cp, "kopfpeerings.kopf.dev", peering, namespace) or {}).get("status") or {}
    assert peers, "the operator never recorded itself in the chart's KopfPeering"
    reasons = cp.kubectl("get", "events", "-n", namespace, "--field-selector", "involvedObject.name=runas",
                         "-o", "jsonpath={.items[*].reason}").stdout.split()
    assert "Succeeded" in reasons
    assert chart_operator.metric("graft_finetunejobs", namespace=namespace, phase="Succeeded") == 1
    assert (chart_operator.metric("graft_reconciles_total", kind="FineTuneJob", result="success") or 0) >= 1


def test_policy_rejection_needs_only_the_chart_rbac(chart_operator: ChartOperator, namespace: str) -> None:
    cp = chart_operator.cp
    tenant = f"rbac-{uuid.uuid4().hex[:6]}"
    cp.kubectl("label", "namespace", namespace, f"graft.dev/tenant={tenant}")
    policy = {"apiVersion": "graft.dev/v1alpha1", "kind": "FineTunePolicy", "metadata": {"name": tenant},
              "spec": {"namespaceSelector": {"matchLabels": {"graft.dev/tenant": tenant}},
                       "limits": {"maxWorkers": 1}}}
    apply_objects(cp, [policy])
    try:
        apply(cp, finetunejob("too-big", resources={"workers": 2}), namespace)
        wait_for(phase_is(cp, FTJ, "too-big", namespace, "Rejected"), timeout=60, what="Rejected")
        message = status(cp, FTJ, "too-big", namespace).get("message", "")
        conditions = " ".join(c.get("message", "") for c in status(cp, FTJ, "too-big", namespace).get("conditions", []))
        assert f"spec.resources.workers: 2 exceeds maxWorkers 1 set by FineTunePolicy {tenant}" in message + conditions
        assert names(cp, RJ, namespace) == []
        assert (chart_operator.metric("graft_policy_admissions_total", result="rejected") or 0) >= 1
    finally:
        cp.kubectl("delete", "finetunepolicy", tenant, "--ignore-not-found")
