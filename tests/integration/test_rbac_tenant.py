"""Tenants on the real API server: a ServiceAccount bound to the chart's graft-edit role in its own
namespace creates real FineTuneJobs there (validated by the chart's CRDs), and is refused
everywhere else; it never reads Secrets or another tenant's ModelEndpoints."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from testbed.controlplane import ControlPlane
from testbed.process import wait_until
from tests.integration.rbac import REPO, aggregation_controller, apply_operator_rbac, can_i, install_graft_crds

pytestmark = pytest.mark.integration

EXAMPLE = REPO / "examples" / "finetune.yaml"


@dataclass
class Tenant:
    namespace: str
    token: str
    kubeconfig: Path


def endpoint(name: str) -> str:
    return json.dumps({"apiVersion": "graft.dev/v1alpha1", "kind": "ModelEndpoint", "metadata": {"name": name},
                       "spec": {"model": {"uri": f"s3://models/{name}"}}})


def make_tenant(cp: ControlPlane, tmp: Path, role: str, prefix: str) -> Tenant:
    """A namespace and a ServiceAccount in it bound to `role` with a RoleBinding (docs/tenancy.md)."""
    ns = cp.create_namespace(prefix=prefix)
    token = cp.sa_token(ns, "alice")
    cp.kubectl("create", "rolebinding", "alice-graft", "-n", ns, f"--clusterrole={role}",
               f"--serviceaccount={ns}:alice")
    return Tenant(ns, token, cp.token_kubeconfig(token, tmp / f"{ns}.kubeconfig", user=f"{ns}-alice", namespace=ns))


@pytest.fixture(scope="module")
def tenants(control_plane: ControlPlane, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Tenant, Tenant]]:
    install_graft_crds(control_plane)
    apply_operator_rbac(control_plane)  # includes the graft-edit and graft-view ClusterRoles (not aggregated by default)
    tmp = tmp_path_factory.mktemp("tenants")
    a = make_tenant(control_plane, tmp, "graft-edit", "tenant-a")
    b = make_tenant(control_plane, tmp, "graft-edit", "tenant-b")
    yield a, b
    for t in (a, b):
        control_plane.delete_namespace(t.namespace)


def test_tenant_creates_a_finetunejob_in_its_namespace(control_plane: ControlPlane, tenants: tuple[Tenant, Tenant]) -> None:
    a, _ = tenants
    control_plane.kubectl("create", "-n", a.namespace, "-f", str(EXAMPLE), kubeconfig=a.kubeconfig)
    job = control_plane.kubectl_json("get", "finetunejob", "movie-sentiment", "-n", a.namespace, kubeconfig=a.kubeconfig)
    assert job["spec"]["tuning"]["numTrials"] == yaml.safe_load(EXAMPLE.read_text())["spec"]["tuning"]["numTrials"]
    control_plane.kubectl("delete", "finetunejob", "movie-sentiment", "-n", a.namespace, kubeconfig=a.kubeconfig)


def test_invalid_finetunejob_is_refused_by_the_crd_schema(
    control_plane: ControlPlane, tenants: tuple[Tenant, Tenant]
) -> None:
    a, _ = tenants
    doc = yaml.safe_load(EXAMPLE.read_text())
    doc["metadata"]["name"] = "bad-zero"
    doc["spec"]["training"]["deepspeed"] = {"zeroStage": 5}
    p = control_plane.kubectl("create", "-n", a.namespace, "-f", "-", input=json.dumps(doc),
                              kubeconfig=a.kubeconfig, check=False)
    assert p.returncode != 0 and "zeroStage" in p.stderr, p.stderr


def test_tenant_is_refused_in_another_tenants_namespace(
    control_plane: ControlPlane, tenants: tuple[Tenant, Tenant]
) -> None:
    a, b = tenants
    p = control_plane.kubectl("create", "-n", b.namespace, "-f", str(EXAMPLE), kubeconfig=a.kubeconfig, check=False)
    assert p.returncode != 0 and "Forbidden" in p.stderr, p.stderr
    assert not can_i(control_plane, a.token, "create", "finetunejobs", group="graft.dev", namespace=b.namespace)
    assert not can_i(control_plane, a.token, "list", "finetunejobs", group="graft.dev")


def test_tenant_cannot_read_another_tenants_endpoints(control_plane: ControlPlane, tenants: tuple[Tenant, Tenant]) -> None:
    a, b = tenants
    control_plane.kubectl("create", "-n", b.namespace, "-f", "-", input=endpoint("b-private"), kubeconfig=b.kubeconfig)
    for args in (["get", "modelendpoint", "b-private", "-n", b.namespace], ["get", "modelendpoints", "-n", b.namespace],
                 ["get", "modelendpoints", "-A"]):
        p = control_plane.kubectl(*args, kubeconfig=a.kubeconfig, check=False)
        assert p.returncode != 0 and "Forbidden" in p.stderr, (args, p.stderr)
    assert "b-private" in control_plane.kubectl("get", "modelendpoints", "-n", b.namespace, kubeconfig=b.kubeconfig).stdout


def test_tenant_cannot_read_secrets_even_in_its_namespace(
    control_plane: ControlPlane, tenants: tuple[Tenant, Tenant]
) -> None:
    a, b = tenants
    for t in (a, b):
        control_plane.kubectl("create", "secret", "generic", "hf-token", "-n", t.namespace, "--from-literal=t=x")
    for ns in (a.namespace, b.namespace):
        p = control_plane.kubectl("get", "secret", "hf-token", "-n", ns, kubeconfig=a.kubeconfig, check=False)
        assert p.returncode != 0 and "Forbidden" in p.stderr, (ns, p.stderr)


def test_tenant_cannot_write_status_or_policies(control_plane: ControlPlane, tenants: tuple[Tenant, Tenant]) -> None:
    a, _ = tenants
    control_plane.kubectl("create", "-n", a.namespace, "-f", "-", input=endpoint("a-status"), kubeconfig=a.kubeconfig)
    p = control_plane.kubectl("patch", "modelendpoint", "a-status", "-n", a.namespace, "--subresource=status",
                              "--type=merge", "-p", '{"status":{"phase":"Ready"}}', kubeconfig=a.kubeconfig, check=False)
    assert p.returncode != 0 and "Forbidden" in p.stderr, p.stderr
    policy = {"apiVersion": "graft.dev/v1alpha1", "kind": "FineTunePolicy", "metadata": {"name": "tenant-made"},
              "spec": {}}
    p = control_plane.kubectl("create", "-f", "-", input=json.dumps(policy), kubeconfig=a.kubeconfig, check=False)
    assert p.returncode != 0 and "Forbidden" in p.stderr, p.stderr


@pytest.mark.tenancy
def test_tenant_cannot_write_the_operators_children(control_plane: ControlPlane, tenants: tuple[Tenant, Tenant]) -> None:
    """The spec that runs travels in the RayJob's entrypoint: tenants can neither create nor edit RayJobs
    or RayServices (issue 8 item 3)."""
    a, _ = tenants
    for verb in ("create", "update", "patch"):
        for resource in ("rayjobs", "rayservices", "rayclusters"):
            assert not can_i(control_plane, a.token, verb, resource, group="ray.io", namespace=a.namespace), (verb, resource)
        assert not can_i(control_plane, a.token, verb, "finetunejobs", group="graft.dev", namespace=a.namespace,
                         subresource="status")


def test_viewer_reads_but_cannot_create(control_plane: ControlPlane, tenants: tuple[Tenant, Tenant], tmp_path: Path) -> None:
    a, _ = tenants
    control_plane.kubectl("create", "-n", a.namespace, "-f", "-", input=endpoint("a-visible"), kubeconfig=a.kubeconfig)
    token = control_plane.sa_token(a.namespace, "bob")
    control_plane.kubectl("create", "rolebinding", "bob-graft", "-n", a.namespace, "--clusterrole=graft-view",
                          f"--serviceaccount={a.namespace}:bob")
    kc = control_plane.token_kubeconfig(token, tmp_path / "bob.kubeconfig", user="bob")
    assert "a-visible" in control_plane.kubectl("get", "modelendpoints", "-n", a.namespace, kubeconfig=kc).stdout
    p = control_plane.kubectl("create", "-n", a.namespace, "-f", "-", input=endpoint("bob-made"), kubeconfig=kc,
                              check=False)
    assert p.returncode != 0 and "Forbidden" in p.stderr, p.stderr


def test_builtin_roles_aggregate_graft_roles(
    control_plane: ControlPlane, tenants: tuple[Tenant, Tenant], tmp_path: Path
) -> None:
    """With rbac.aggregateToDefaultRoles (off by default), kube-controller-manager's
    clusterrole-aggregation-controller folds graft-edit into the built-in edit (and admin) role and
    graft-view into view: a user bound to plain `edit` creates FineTuneJobs, one bound to plain `view`
    reads them."""
    a, _ = tenants
    apply_operator_rbac(control_plane, {"rbac": {"aggregateToDefaultRoles": True}})

    def has(role: str, verb: str) -> bool:
        rules = control_plane.kubectl_json("get", "clusterrole", role).get("rules") or []
        return any("graft.dev" in r.get("apiGroups", []) and "finetunejobs" in r.get("resources", [])
                   and verb in r.get("verbs", []) for r in rules)

    with aggregation_controller(control_plane, tmp_path) as log:
        try:
            wait_until(lambda: has("edit", "create") and has("admin", "create") and has("view", "list"),
                       timeout=90, what="graft roles aggregated into edit, admin and view")
        except TimeoutError as exc:
            raise AssertionError(f"{exc}\n{log.read_text()[-3000:] if log.exists() else ''}") from exc
    assert not has("view", "create")
    token = control_plane.sa_token(a.namespace, "carol")
    control_plane.kubectl("create", "rolebinding", "carol-edit", "-n", a.namespace, "--clusterrole=edit",
                          f"--serviceaccount={a.namespace}:carol")
    assert can_i(control_plane, token, "create", "finetunejobs", group="graft.dev", namespace=a.namespace)
    assert can_i(control_plane, token, "create", "modelendpoints", group="graft.dev", namespace=a.namespace)
