"""The chart against the real API server: its CRDs (FineTunePolicy validation, kopf peering), every
rendered manifest accepted by server-side dry-run, and a real `helm install` / `helm uninstall`."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from graft.api.policy import FineTunePolicy
from testbed.controlplane import ControlPlane
from tests.integration.rbac import CHART, HelmError, ensure_namespace, helm, install_graft_crds, render_chart

pytestmark = pytest.mark.integration

DOCS = Path(__file__).resolve().parents[2] / "docs"


def docs_policies() -> list[dict[str, Any]]:
    out = []
    for block in re.findall(r"```yaml\n(.*?)```", (DOCS / "policy.md").read_text(), flags=re.S):
        out += [d for d in yaml.safe_load_all(block) if isinstance(d, dict) and d.get("kind") == "FineTunePolicy"]
    return out


@pytest.fixture(scope="module")
def crds(control_plane: ControlPlane) -> ControlPlane:
    names = install_graft_crds(control_plane)
    assert {"finetunepolicies.graft.dev", "clusterkopfpeerings.kopf.dev", "kopfpeerings.kopf.dev"} <= set(names)
    return control_plane


def test_policy_crd_is_cluster_scoped(crds: ControlPlane) -> None:
    crd = crds.kubectl_json("get", "crd", "finetunepolicies.graft.dev")
    assert crd["spec"]["scope"] == "Cluster"
    assert "ftp" in crd["spec"]["names"]["shortNames"]


def test_docs_policy_example_is_accepted_and_printed(crds: ControlPlane) -> None:
    (doc,) = docs_policies()
    doc = {**doc, "metadata": {"name": "docs-example"}}
    crds.kubectl("apply", "--server-side", "--field-manager=graft-tests", "--validate=strict", "-f", "-",
                 input=json.dumps(doc))
    stored = crds.kubectl_json("get", "finetunepolicy", "docs-example")
    assert FineTunePolicy.model_validate(stored).spec.limits.max_workers == doc["spec"]["limits"]["maxWorkers"]
    table = crds.kubectl("get", "ftp", "docs-example").stdout.splitlines()
    assert table[0].split() == ["NAME", "MAX", "WORKERS", "MAX", "GPUS", "MAX", "JOBS", "QUEUE", "AGE"]
    assert table[1].split()[:5] == ["docs-example", "4", "8", "3", "team-queue"]
    crds.kubectl("delete", "finetunepolicy", "docs-example")


def test_selector_operator_without_values_is_refused_by_the_api_server(crds: ControlPlane) -> None:
    bad = {"apiVersion": "graft.dev/v1alpha1", "kind": "FineTunePolicy", "metadata": {"name": "bad-selector"},
           "spec": {"namespaceSelector": {"matchExpressions": [{"key": "team", "operator": "In"}]}}}
    p = crds.kubectl("create", "-f", "-", input=json.dumps(bad), check=False)
    assert p.returncode != 0 and "In and NotIn need values" in p.stderr, p.stderr


def test_unknown_policy_limit_is_refused_by_the_api_server(crds: ControlPlane) -> None:
    bad = {"apiVersion": "graft.dev/v1alpha1", "kind": "FineTunePolicy", "metadata": {"name": "bad-limit"},
           "spec": {"limits": {"maxGpus": 4}}}
    p = crds.kubectl("create", "--validate=strict", "-f", "-", input=json.dumps(bad), check=False)
    assert p.returncode != 0 and "maxGpus" in p.stderr, p.stderr


def test_negative_limit_is_refused_by_the_api_server(crds: ControlPlane) -> None:
    bad = {"apiVersion": "graft.dev/v1alpha1", "kind": "FineTunePolicy", "metadata": {"name": "bad-min"},
           "spec": {"limits": {"maxWorkers": 0}}}
    p = crds.kubectl("create", "-f", "-", input=json.dumps(bad), check=False)
    assert p.returncode != 0 and "maxWorkers" in p.stderr, p.stderr


@pytest.mark.parametrize("values", [
    {},
    {"watchNamespaces": ["dryrun-a", "dryrun-b"]},
    {"replicas": 2, "networkPolicy": {"enabled": True}},
    {"metrics": {"enabled": False}, "peering": {"enabled": False}},
], ids=["defaults", "watch-namespaces", "replicas-netpol", "minimal"])
def test_every_rendered_manifest_passes_server_side_dry_run(crds: ControlPlane, values: dict[str, Any]) -> None:
    docs = render_chart(values, release="dryrun", namespace="dryrun-system")
    for ns in ["dryrun-system", *values.get("watchNamespaces", [])]:
        ensure_namespace(crds, ns)
    out = crds.kubectl("apply", "--server-side", "--dry-run=server", "--force-conflicts",
                       "--field-manager=graft-tests", "--validate=strict", "-o", "name", "-f", "-",
                       input=json.dumps({"apiVersion": "v1", "kind": "List", "items": docs})).stdout
    assert len(out.split()) == len(docs), out


def test_helm_install_and_uninstall_on_the_real_api_server(crds: ControlPlane) -> None:
    cp = crds
    release, ns = "helmtest", "helmtest-system"
    values = json.dumps({"peering": {"name": "helmtest"}})
    kube = ["--kubeconfig", str(cp.kubeconfig)]
    helm("install", release, str(CHART), "--namespace", ns, "--create-namespace", "--values", "-", *kube,
         stdin=values)
    try:
        deployment = cp.kubectl_json("get", "deployment", "helmtest-graft", "-n", ns)
        assert deployment["spec"]["template"]["spec"]["serviceAccountName"] == "helmtest-graft"
        for role in ("helmtest-graft-operator", "helmtest-graft-operator-cluster", "helmtest-graft-edit",
                     "helmtest-graft-view"):
            cp.kubectl("get", "clusterrole", role)
        cp.kubectl("get", "clusterkopfpeering", "helmtest")
        status = json.loads(helm("status", release, "--namespace", ns, "-o", "json", *kube))
        assert status["info"]["status"] == "deployed"
        assert "kubectl apply --server-side -f charts/graft/crds/" in status["info"]["notes"]
    finally:
        helm("uninstall", release, "--namespace", ns, "--wait", "--timeout", "120s", *kube)
    gone = cp.kubectl("get", "clusterrole", "helmtest-graft-operator", check=False)
    assert gone.returncode != 0 and "NotFound" in gone.stderr
    # Helm keeps CRDs on uninstall: FineTuneJobs survive a reinstall.
    cp.kubectl("get", "crd", "finetunejobs.graft.dev")


def test_helm_refuses_a_kubernetes_version_below_the_chart_minimum() -> None:
    with pytest.raises(HelmError, match="kubeVersion"):
        helm("template", "graft", str(CHART), "--kube-version", "1.26.0")


def test_helm_install_refuses_a_value_the_schema_does_not_allow(control_plane: ControlPlane) -> None:
    kube = ["--kubeconfig", str(control_plane.kubeconfig)]
    with pytest.raises(HelmError, match="values don't meet the specifications of the schema") as info:
        helm("install", "badvalues", str(CHART), "--namespace", "badvalues-system", "--create-namespace",
             "--values", "-", *kube, stdin=json.dumps({"image": {"pullPolicy": "Sometimes"}}))
    assert "pullPolicy" in str(info.value)
    status = helm("list", "--all-namespaces", "-o", "json", *kube)
    assert "badvalues" not in status  # nothing was installed
