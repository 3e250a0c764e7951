"""The Graft chart rendered by the real helm (built by scripts/controlplane.sh): lint, RBAC rules
exactly as the operator needs them, hardened pod, and each value combination that matters.

Marked integration: it needs the helm binary from the control plane build (or $GRAFT_HELM).
"""

from __future__ import annotations

import argparse
import base64
from pathlib import Path
from typing import Any

import pytest
import yaml

from graft.operator.main import add_arguments, settings_from_args
from graft.operator.settings import OperatorSettings
from tests.integration.rbac import CHART, KUBE_VERSION, HelmError, helm, render_chart

pytestmark = pytest.mark.integration

# The namespaced rules, verbatim: the operator's contract with the API server.
RAY_AUTH_KEY_FILE = "/etc/graft/ray-auth/key"
OPERATOR_RULES: list[dict[str, Any]] = [
    {"apiGroups": ["graft.dev"], "resources": ["finetunejobs"], "verbs": ["get", "list", "watch", "patch"]},
    {"apiGroups": ["graft.dev"], "resources": ["modelendpoints"], "verbs": ["get", "list", "watch", "create", "patch"]},
    {"apiGroups": ["graft.dev"], "resources": ["finetunejobs/status", "modelendpoints/status"], "verbs": ["patch"]},
    {"apiGroups": ["graft.dev"], "resources": ["finetunejobs/finalizers", "modelendpoints/finalizers"], "verbs": ["update"]},
    {"apiGroups": ["ray.io"], "resources": ["rayjobs"], "verbs": ["get", "list", "watch", "create", "patch", "delete"]},
    {"apiGroups": ["ray.io"], "resources": ["rayservices"], "verbs": ["get", "list", "watch", "create", "patch"]},
    {"apiGroups": [""], "resources": ["pods"], "verbs": ["list", "watch"]},
    {"apiGroups": [""], "resources": ["secrets"], "verbs": ["create"]},  # Ray token Secrets: never read
    {"apiGroups": ["networking.k8s.io"], "resources": ["networkpolicies"], "verbs": ["create"]},  # one per Ray cluster
    {"apiGroups": [""], "resources": ["events"], "verbs": ["create"]},
]
NAMESPACED_PEERING_RULE = {"apiGroups": ["kopf.dev"], "resources": ["kopfpeerings"],
                           "verbs": ["get", "list", "watch", "patch"]}
CLUSTER_RULES: list[dict[str, Any]] = [
    {"apiGroups": ["apiextensions.k8s.io"], "resources": ["customresourcedefinitions"], "verbs": ["get", "list", "watch"]},
    {"apiGroups": [""], "resources": ["namespaces"], "verbs": ["get", "list", "watch"]},
    {"apiGroups": ["graft.dev"], "resources": ["finetunepolicies"], "verbs": ["get", "list", "watch"]},
]
CLUSTER_PEERING_RULE = {"apiGroups": ["kopf.dev"], "resources": ["clusterkopfpeerings"],
                        "verbs": ["get", "list", "watch", "patch"]}

COMBINATIONS: dict[str, dict[str, Any]] = {
    "defaults": {},
    "watch-namespaces": {"watchNamespaces": ["team-a", "team-b"]},
    "metrics-off": {"metrics": {"enabled": False}},
    "two-replicas": {"replicas": 2},
    "standalone": {"peering": {"enabled": False}},
    "everything-on": {"metrics": {"serviceMonitor": {"enabled": True}}, "networkPolicy": {"enabled": True}},
}


def one(docs: list[dict[str, Any]], kind: str, name: str, namespace: str | None = None) -> dict[str, Any]:
    found = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name
             and d["metadata"].get("namespace") == namespace]
    assert len(found) == 1, f"expected one {kind} {namespace}/{name}, found {len(found)}"
    return found[0]


def kinds(docs: list[dict[str, Any]]) -> list[str]:
    return sorted(d["kind"] for d in docs)


def container(docs: list[dict[str, Any]]) -> dict[str, Any]:
    return one(docs, "Deployment", "graft", "graft-system")["spec"]["template"]["spec"]["containers"][0]


@pytest.fixture(scope="module")
def rendered() -> dict[str, list[dict[str, Any]]]:
    return {name: render_chart(values) for name, values in COMBINATIONS.items()}


def test_helm_lint_is_clean() -> None:
    out = helm("lint", str(CHART), "--strict", "--kube-version", KUBE_VERSION)
    assert "0 chart(s) failed" in out and "[WARNING]" not in out and "[ERROR]" not in out, out


@pytest.mark.parametrize("combination", list(COMBINATIONS))
def test_lint_is_clean_for_each_combination(combination: str) -> None:
    out = helm("lint", str(CHART), "--strict", "--kube-version", KUBE_VERSION, "--values", "-",
               stdin=yaml.safe_dump(COMBINATIONS[combination]))
    assert "0 chart(s) failed" in out and "[WARNING]" not in out and "[ERROR]" not in out, out


def test_default_install_grants_namespaced_rules_cluster_wide(rendered: dict[str, list[dict[str, Any]]]) -> None:
    docs = rendered["defaults"]
    assert one(docs, "ClusterRole", "graft-operator")["rules"] == OPERATOR_RULES
    assert one(docs, "ClusterRole", "graft-operator-cluster")["rules"] == CLUSTER_RULES + [CLUSTER_PEERING_RULE]
    for name in ("graft-operator", "graft-operator-cluster"):
        binding = one(docs, "ClusterRoleBinding", name)
        assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": name}
        assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "graft", "namespace": "graft-system"}]
    assert not [d for d in docs if d["kind"] in ("Role", "RoleBinding")]
    assert "--all-namespaces" in container(docs)["args"]


def test_watch_namespaces_get_a_role_each_and_only_cluster_reads(rendered: dict[str, list[dict[str, Any]]]) -> None:
    docs = rendered["watch-namespaces"]
    for ns in ("team-a", "team-b"):
        assert one(docs, "Role", "graft-operator", ns)["rules"] == OPERATOR_RULES + [NAMESPACED_PEERING_RULE]
        binding = one(docs, "RoleBinding", "graft-operator", ns)
        assert binding["roleRef"]["kind"] == "Role"
        assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "graft", "namespace": "graft-system"}]
        one(docs, "KopfPeering", "graft", ns)
    assert one(docs, "ClusterRole", "graft-operator-cluster")["rules"] == CLUSTER_RULES
    assert not [d for d in docs if d["kind"] == "ClusterRole" and d["metadata"]["name"] == "graft-operator"]
    assert not [d for d in docs if d["kind"] == "ClusterKopfPeering"]
    args = container(docs)["args"]
    assert "--namespace=team-a" in args and "--namespace=team-b" in args and "--all-namespaces" not in args


@pytest.mark.parametrize("combination", list(COMBINATIONS))
def test_no_rule_reads_secrets_or_uses_wildcards(rendered: dict[str, list[dict[str, Any]]], combination: str) -> None:
    """Secrets only ever created (the operator's Ray token Secrets, graft.operator.rayauth), never read."""
    for doc in rendered[combination]:
        for rule in doc.get("rules", []) if doc["kind"] in ("ClusterRole", "Role") else []:
            assert "secrets" not in rule["resources"] or (rule["resources"], rule["verbs"]) == (["secrets"], ["create"]), \
                doc["metadata"]["name"]
            assert "*" not in rule["resources"] + rule["verbs"] + rule["apiGroups"], doc["metadata"]["name"]
            assert not {"escalate", "bind", "impersonate"} & set(rule["verbs"]), doc["metadata"]["name"]


def test_operator_pod_is_hardened(rendered: dict[str, list[dict[str, Any]]]) -> None:
    docs = rendered["defaults"]
    pod = one(docs, "Deployment", "graft", "graft-system")["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "graft"
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    sc = container(docs)["securityContext"]
    assert sc["runAsNonRoot"] is True and sc["runAsUser"] != 0
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert sc["seccompProfile"] == {"type": "RuntimeDefault"}
    resources = container(docs)["resources"]
    assert set(resources) == {"requests", "limits"} and resources["limits"]["memory"]


def test_probes_use_kopf_liveness_endpoint(rendered: dict[str, list[dict[str, Any]]]) -> None:
    c = container(rendered["defaults"])
    assert "--liveness=http://0.0.0.0:8080/healthz" in c["args"]
    health = next(p for p in c["ports"] if p["name"] == "health")
    assert health["containerPort"] == 8080
    for probe in ("livenessProbe", "readinessProbe"):
        assert c[probe]["httpGet"] == {"path": "/healthz", "port": "health"}


def test_single_replica_peers_and_never_overlaps(rendered: dict[str, list[dict[str, Any]]]) -> None:
    docs = rendered["defaults"]
    deployment = one(docs, "Deployment", "graft", "graft-system")
    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}
    assert "--peering=graft" in container(docs)["args"]
    assert not any(a.startswith("--priority") for a in container(docs)["args"])
    one(docs, "ClusterKopfPeering", "graft")
    env = {e["name"]: e for e in container(docs)["env"]}
    assert env["POD_ID"]["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.name"}}


def test_two_replicas_peer_with_distinct_random_priorities(rendered: dict[str, list[dict[str, Any]]]) -> None:
    docs = rendered["two-replicas"]
    assert one(docs, "Deployment", "graft", "graft-system")["spec"]["replicas"] == 2
    assert {"--peering=graft", "--priority=random"} <= set(container(docs)["args"])


def test_the_peering_object_is_named_after_the_release_so_two_releases_never_share_it() -> None:
    for release in ("graft", "graft-staging"):
        docs = render_chart(release=release)
        deployment = one(docs, "Deployment", release, "graft-system")
        one(docs, "ClusterKopfPeering", release)
        assert f"--peering={release}" in deployment["spec"]["template"]["spec"]["containers"][0]["args"]


def test_an_explicit_peering_name_wins() -> None:
    docs = render_chart({"peering": {"name": "shared"}})
    one(docs, "ClusterKopfPeering", "shared")
    assert "--peering=shared" in container(docs)["args"]


def test_two_replicas_without_peering_are_refused() -> None:
    with pytest.raises(HelmError, match="replicas > 1 needs peering.enabled"):
        render_chart({"replicas": 2, "peering": {"enabled": False}})


def test_peering_disabled_runs_standalone_without_peering_rbac(rendered: dict[str, list[dict[str, Any]]]) -> None:
    docs = rendered["standalone"]
    assert "--standalone" in container(docs)["args"]
    assert not [d for d in docs if d["kind"] in ("ClusterKopfPeering", "KopfPeering")]
    assert one(docs, "ClusterRole", "graft-operator-cluster")["rules"] == CLUSTER_RULES


def test_metrics_off_drops_service_port_and_flag(rendered: dict[str, list[dict[str, Any]]]) -> None:
    docs = rendered["metrics-off"]
    assert "Service" not in kinds(docs)
    c = container(docs)
    assert not any(a.startswith("--metrics-port") for a in c["args"])
    assert [p["name"] for p in c["ports"]] == ["health"]


def test_metrics_on_by_default_with_service(rendered: dict[str, list[dict[str, Any]]]) -> None:
    docs = rendered["defaults"]
    assert "--metrics-port=9090" in container(docs)["args"]
    service = one(docs, "Service", "graft-metrics", "graft-system")
    assert service["spec"]["ports"] == [{"name": "metrics", "port": 9090, "targetPort": "metrics", "protocol": "TCP"}]
    assert service["spec"]["selector"] == one(docs, "Deployment", "graft", "graft-system")["spec"]["selector"]["matchLabels"]
    assert "ServiceMonitor" not in kinds(docs) and "NetworkPolicy" not in kinds(docs)


def test_service_monitor_and_network_policy_toggles(rendered: dict[str, list[dict[str, Any]]]) -> None:
    docs = rendered["everything-on"]
    monitor = one(docs, "ServiceMonitor", "graft", "graft-system")
    assert monitor["spec"]["endpoints"][0]["port"] == "metrics"
    policy = one(docs, "NetworkPolicy", "graft", "graft-system")
    assert policy["spec"]["policyTypes"] == ["Ingress"] and policy["spec"]["ingress"] == []


def test_network_policy_admits_metrics_scrapers_only() -> None:
    scraper = {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}
    docs = render_chart({"networkPolicy": {"enabled": True, "metricsFrom": [scraper]}})
    ingress = one(docs, "NetworkPolicy", "graft", "graft-system")["spec"]["ingress"]
    assert ingress == [{"from": [scraper], "ports": [{"port": "metrics", "protocol": "TCP"}]}]


@pytest.mark.tenancy
def test_tenant_roles_are_not_aggregated_into_default_roles_by_default(rendered: dict[str, list[dict[str, Any]]]) -> None:
    """A namespace editor is not a Graft tenant unless bound to graft-edit (issue 21, finding 11)."""
    for name in ("graft-edit", "graft-view"):
        labels = one(rendered["defaults"], "ClusterRole", name)["metadata"]["labels"]
        assert not any(key.startswith("rbac.authorization.k8s.io/aggregate-to-") for key in labels), labels


def test_tenant_roles_aggregate_into_default_roles_when_asked() -> None:
    docs = render_chart({"rbac": {"aggregateToDefaultRoles": True}})
    edit = one(docs, "ClusterRole", "graft-edit")
    view = one(docs, "ClusterRole", "graft-view")
    assert edit["metadata"]["labels"]["rbac.authorization.k8s.io/aggregate-to-edit"] == "true"
    assert edit["metadata"]["labels"]["rbac.authorization.k8s.io/aggregate-to-admin"] == "true"
    assert view["metadata"]["labels"]["rbac.authorization.k8s.io/aggregate-to-view"] == "true"
    assert "rbac.authorization.k8s.io/aggregate-to-edit" not in view["metadata"]["labels"]
    assert edit["rules"] == [{"apiGroups": ["graft.dev"], "resources": ["finetunejobs", "modelendpoints"],
                              "verbs": ["get", "list", "watch", "create", "update", "patch", "delete",
                                        "deletecollection"]}]
    assert view["rules"] == [{"apiGroups": ["graft.dev"], "resources": ["finetunejobs", "modelendpoints"],
                              "verbs": ["get", "list", "watch"]}]


def operator_args(docs: list[dict[str, Any]]) -> argparse.Namespace:
    """The container's arguments parsed by the real `graft operator` parser."""
    parser = argparse.ArgumentParser(prog="graft operator", exit_on_error=False)
    add_arguments(parser)
    args = container(docs)["args"]
    assert container(docs)["command"] == ["graft"] and args[0] == "operator"
    try:
        return parser.parse_args(args[1:])
    except SystemExit:
        pytest.fail(f"`graft operator` (graft/operator/main.py) refuses the chart's arguments {args[1:]}")


@pytest.mark.parametrize("combination", list(COMBINATIONS))
def test_graft_operator_accepts_the_chart_arguments(
    rendered: dict[str, list[dict[str, Any]]], combination: str
) -> None:
    args = operator_args(rendered[combination])
    assert args.liveness == "http://0.0.0.0:8080/healthz"


def test_operator_values_reach_the_operator_as_settings() -> None:
    values = {"operator": {"rayImage": "registry.example.com/graft-ray:0.2", "rayServiceAccount": "ray",
                           "storagePvc": "graft-data", "resultStorage": "s3://results/", "resyncSeconds": 10,
                           "rayImagePullPolicy": "Always", "verbose": True, "submissionMode": "HTTPMode"}}
    args = operator_args(render_chart(values))
    settings = settings_from_args(args)
    assert (settings.ray_image, settings.service_account, settings.storage_pvc, settings.result_storage) == (
        "registry.example.com/graft-ray:0.2", "ray", "graft-data", "s3://results/")
    assert (settings.resync_seconds, settings.image_pull_policy, args.verbose) == (10, "Always", True)
    assert settings.submission_mode == "HTTPMode"


def test_an_unknown_submission_mode_is_refused_by_the_values_schema() -> None:
    with pytest.raises(HelmError, match="submissionMode"):
        render_chart({"operator": {"submissionMode": "PodMode"}})


def test_default_operator_values_match_the_operator_defaults(rendered: dict[str, list[dict[str, Any]]]) -> None:
    # The chart adds the key file it mounts (templates/ray-auth-key.yaml); the rest are the operator's defaults.
    settings = settings_from_args(operator_args(rendered["defaults"]))
    assert settings == OperatorSettings(ray_auth_key_file=RAY_AUTH_KEY_FILE, ray_ingress_from=settings.ray_ingress_from)


@pytest.mark.tenancy
def test_require_policy_is_on_by_default_and_one_value_turns_it_off(rendered: dict[str, list[dict[str, Any]]]) -> None:
    """Secure by default: a namespace no FineTunePolicy selects runs nothing (issue 21, finding 11)."""
    assert settings_from_args(operator_args(rendered["defaults"])).require_policy is True
    assert OperatorSettings().require_policy is True
    single_team = render_chart({"tenancy": {"requirePolicy": False}})
    assert settings_from_args(operator_args(single_team)).require_policy is False


def test_root_filesystem_is_read_only_with_a_writable_tmp(rendered: dict[str, list[dict[str, Any]]]) -> None:
    c = container(rendered["defaults"])
    assert [m["mountPath"] for m in c["volumeMounts"]] == ["/tmp", "/etc/graft/ray-auth"]
    assert [m.get("readOnly") for m in c["volumeMounts"]] == [None, True]
    assert {"name": "HOME", "value": "/tmp"} in c["env"]


def test_invalid_watch_namespace_is_refused() -> None:
    with pytest.raises(HelmError, match="not a valid namespace name"):
        render_chart({"watchNamespaces": ["Team_A"]})


def test_release_name_prefixes_cluster_scoped_names() -> None:
    docs = render_chart(release="ml", namespace="ml-system")
    names = {d["metadata"]["name"] for d in docs if d["kind"] == "ClusterRole"}
    assert names == {"ml-graft-operator", "ml-graft-operator-cluster", "ml-graft-edit", "ml-graft-view"}
    assert one(docs, "ClusterRoleBinding", "ml-graft-operator")["subjects"][0] == {
        "kind": "ServiceAccount", "name": "ml-graft", "namespace": "ml-system"}


@pytest.mark.parametrize(
    ("values", "field"),
    [({"replica": 2}, "replica"), ({"replicas": "two"}, "replicas"), ({"image": {"pullPolicy": "Sometimes"}}, "pullPolicy"),
     ({"operator": {"rayImag": "x"}}, "rayImag")],
)
def test_schema_refuses_misspelt_and_mistyped_values(values: dict[str, Any], field: str) -> None:
    with pytest.raises(HelmError, match=field):
        render_chart(values)


def test_helm_package_builds_a_chart_archive_that_renders(tmp_path: Path) -> None:
    out = helm("package", str(CHART), "--destination", str(tmp_path))
    archive = tmp_path / "graft-0.1.0.tgz"
    assert archive.is_file(), out
    rendered = helm("template", "graft", str(archive), "--kube-version", KUBE_VERSION)
    assert "kind: Deployment" in rendered


@pytest.mark.tenancy
def test_the_ray_auth_key_is_a_generated_secret_only_the_operator_pod_mounts(rendered: dict[str, list[dict[str, Any]]]) -> None:
    docs = rendered["defaults"]
    key = one(docs, "Secret", "graft-ray-auth-key", "graft-system")
    assert len(base64.b64decode(key["data"]["key"])) == 64
    pod = one(docs, "Deployment", "graft", "graft-system")["spec"]["template"]["spec"]
    assert {"name": "ray-auth-key", "secret": {"secretName": "graft-ray-auth-key", "defaultMode": 0o440}} in pod["volumes"]
    assert f"--ray-auth-key-file={RAY_AUTH_KEY_FILE}" in container(docs)["args"]


@pytest.mark.tenancy
def test_ray_clusters_admit_the_operator_and_kuberay_only(rendered: dict[str, list[dict[str, Any]]]) -> None:
    """The peers every Ray cluster's NetworkPolicy admits (graft.operator.builders.netpol): the
    operator's pods in the release namespace, then KubeRay's; none when the value is off."""
    peers = settings_from_args(operator_args(rendered["defaults"])).ray_ingress_from
    assert peers == [
        {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "graft-system"}},
         "podSelector": {"matchLabels": {"app.kubernetes.io/name": "graft", "app.kubernetes.io/instance": "graft",
                                         "app.kubernetes.io/component": "operator"}}},
        {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kuberay-system"}},
         "podSelector": {"matchLabels": {"app.kubernetes.io/name": "kuberay-operator"}}},
    ]
    off = render_chart({"networkPolicy": {"rayClusters": False}})
    assert settings_from_args(operator_args(off)).ray_ingress_from is None
