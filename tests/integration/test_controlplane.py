"""The local control plane is real: version, CRD validation, GC, RBAC, namespace finalization."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from testbed.binaries import ControlPlaneError
from testbed.controlplane import ControlPlane

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]

MINIMAL_RAYJOB = """
apiVersion: ray.io/v1
kind: RayJob
metadata:
  name: {name}
spec:
  entrypoint: python -c "print('hello')"
  rayClusterSpec:
    headGroupSpec:
      rayStartParams: {{}}
      template:
        spec:
          containers:
          - name: ray-head
            image: rayproject/ray:2.46.0
"""


def _pinned_k8s_version() -> str:
    text = (REPO / "tools" / "controlplane" / "go.mod").read_text()
    return re.search(r"k8s\.io/kubernetes (v\S+)", text).group(1)


def test_version_is_the_real_release(control_plane: ControlPlane) -> None:
    v = control_plane.version()
    assert v["gitVersion"] == _pinned_k8s_version()
    major, minor = _pinned_k8s_version().lstrip("v").split(".")[:2]
    assert (v["major"], v["minor"]) == (major, minor)


def test_kuberay_crds_served_and_validated(control_plane: ControlPlane, namespace: str) -> None:
    for crd in ("rayclusters.ray.io", "rayjobs.ray.io", "rayservices.ray.io"):
        conds = control_plane.kubectl_json("get", "crd", crd)["status"]["conditions"]
        assert any(c["type"] == "Established" and c["status"] == "True" for c in conds), conds

    control_plane.kubectl("create", "-n", namespace, "-f", "-", input=MINIMAL_RAYJOB.format(name="minimal"))
    job = control_plane.kubectl_json("get", "rayjob", "minimal", "-n", namespace)
    assert job["spec"]["entrypoint"].startswith("python")
    assert job["metadata"]["uid"]

    # Real OpenAPI schema validation: unknown fields are refused (strict field validation) ...
    unknown = MINIMAL_RAYJOB.format(name="bad").replace("      template:", "      notATemplate:")
    p = control_plane.kubectl("create", "-n", namespace, "-f", "-", input=unknown, check=False)
    assert p.returncode != 0 and 'unknown field "spec.rayClusterSpec.headGroupSpec.notATemplate"' in p.stderr, p.stderr
    # ... and headGroupSpec.template is required.
    missing = MINIMAL_RAYJOB.format(name="bad").split("      template:")[0]
    p = control_plane.kubectl("create", "-n", namespace, "-f", "-", input=missing, check=False)
    assert p.returncode != 0 and "template: Required value" in p.stderr, p.stderr


def test_garbage_collector_deletes_dependents(control_plane: ControlPlane, namespace: str) -> None:
    cp = control_plane
    cp.kubectl("create", "configmap", "owner", "-n", namespace, "--from-literal=a=1")
    uid = cp.kubectl_json("get", "configmap", "owner", "-n", namespace)["metadata"]["uid"]
    cp.kubectl("create", "-n", namespace, "-f", "-", input=json.dumps({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "dependent", "ownerReferences": [
            {"apiVersion": "v1", "kind": "ConfigMap", "name": "owner", "uid": uid}]},
        "data": {"b": "2"},
    }))
    # A dependent of a custom resource too: GC discovered the CRDs (installed before KCM).
    cp.kubectl("create", "-n", namespace, "-f", "-", input=MINIMAL_RAYJOB.format(name="owner-job"))
    job_uid = cp.kubectl_json("get", "rayjob", "owner-job", "-n", namespace)["metadata"]["uid"]
    cp.kubectl("create", "-n", namespace, "-f", "-", input=json.dumps({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "job-dependent", "ownerReferences": [
            {"apiVersion": "ray.io/v1", "kind": "RayJob", "name": "owner-job", "uid": job_uid}]},
    }))

    # --wait=false: the deletion itself must not be what removes the dependents.
    cp.kubectl("delete", "configmap", "owner", "-n", namespace, "--wait=false")
    cp.kubectl("delete", "rayjob", "owner-job", "-n", namespace, "--wait=false")
    # kubectl wait --for=delete watches; no fixed sleeps.
    cp.kubectl("wait", "--for=delete", "configmap/dependent", "configmap/job-dependent",
               "-n", namespace, "--timeout=90s", timeout=100)
    assert cp.kubectl("get", "configmap", "dependent", "-n", namespace, check=False).returncode != 0


def test_service_account_token_needs_rbac(control_plane: ControlPlane, namespace: str, tmp_path: Path) -> None:
    cp = control_plane
    token = cp.sa_token(namespace, "operator")
    assert token.count(".") == 2  # a signed JWT from TokenRequest
    kc = cp.token_kubeconfig(token, tmp_path / "sa.kubeconfig", namespace=namespace)

    who = cp.kubectl("auth", "whoami", "-o", "json", kubeconfig=kc)
    assert json.loads(who.stdout)["status"]["userInfo"]["username"] == \
        f"system:serviceaccount:{namespace}:operator"
    can = cp.kubectl("auth", "can-i", "list", "configmaps", "-n", namespace, kubeconfig=kc, check=False)
    assert can.stdout.strip() == "no"
    denied = cp.kubectl("get", "configmaps", "-n", namespace, kubeconfig=kc, check=False)
    assert denied.returncode != 0 and "Forbidden" in denied.stderr, denied.stderr

    # Grant exactly list on configmaps in this namespace: now allowed, secrets still not.
    cp.kubectl("create", "role", "cm-reader", "-n", namespace, "--verb=get,list", "--resource=configmaps")
    cp.kubectl("create", "rolebinding", "cm-reader", "-n", namespace, "--role=cm-reader",
               f"--serviceaccount={namespace}:operator")
    cp.kubectl("get", "configmaps", "-n", namespace, kubeconfig=kc)
    assert cp.kubectl("auth", "can-i", "list", "secrets", "-n", namespace,
                      kubeconfig=kc, check=False).stdout.strip() == "no"
    assert cp.kubectl("get", "configmaps", "-n", "default", kubeconfig=kc, check=False).returncode != 0

    bogus = cp.token_kubeconfig("not-a-valid-token", tmp_path / "bogus.kubeconfig")
    p = cp.kubectl("get", "configmaps", "-n", namespace, kubeconfig=bogus, check=False)
    assert p.returncode != 0 and "Unauthorized" in p.stderr, p.stderr


def test_kubectl_client_side_and_server_side_apply(control_plane: ControlPlane, namespace: str) -> None:
    """The installed kubectl (version skew vs. the server) covers create/apply/get/delete."""
    cp = control_plane
    cm = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "skew"}, "data": {"k": "1"}}
    cp.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(cm))
    cm["data"]["k"] = "2"
    cp.kubectl("apply", "--server-side", "--force-conflicts", "-n", namespace, "-f", "-", input=json.dumps(cm))
    got = cp.kubectl_json("get", "configmap", "skew", "-n", namespace, "--show-managed-fields")
    assert got["data"] == {"k": "2"}
    assert any(m.get("operation") == "Apply" for m in got["metadata"]["managedFields"])
    cp.kubectl("delete", "configmap", "skew", "-n", namespace)
    with pytest.raises(ControlPlaneError):
        cp.kubectl("get", "configmap", "skew", "-n", namespace)


def test_namespace_deletion_is_finalized(control_plane: ControlPlane) -> None:
    cp = control_plane
    ns = cp.create_namespace(prefix="graft-nsdel")
    cp.kubectl("create", "configmap", "x", "-n", ns)
    cp.delete_namespace(ns, wait=True, timeout=90)
    assert cp.kubectl("get", "namespace", ns, check=False).returncode != 0
