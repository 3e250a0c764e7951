"""Render the Graft chart with the real helm binary and apply its RBAC to a real API server.

    docs = render_chart({"watchNamespaces": ["team-a"]})
    kubeconfig = operator_kubeconfig(control_plane, tmp_path)   # the operator's SA token, chart RBAC
    subprocess.run(["graft", "operator", "--all-namespaces", ...], env={"KUBECONFIG": str(kubeconfig)})

helm comes from scripts/controlplane.sh (built from its Go module next to kube-apiserver), or
from ``$GRAFT_HELM``.
"""

from __future__ import annotations

import json
import os
import ssl
import subprocess
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml

from testbed.binaries import ensure_binaries
from testbed.controlplane import ControlPlane
from testbed.ports import free_port
from testbed.process import Process

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "graft"
CRDS = CHART / "crds"
RELEASE = "graft"
OPERATOR_NAMESPACE = "graft-system"
# The Kubernetes version the control plane runs; helm's default would be its client-go's.
KUBE_VERSION = "1.36.0"

# Kinds the operator's identity is made of; the Deployment, Service and peering objects are not RBAC.
RBAC_KINDS = ("ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding")


def helm_binary() -> Path:
    """``$GRAFT_HELM``, else the helm that scripts/controlplane.sh builds into the control plane bin dir."""
    override = os.environ.get("GRAFT_HELM")
    path = Path(override) if override else ensure_binaries()["bin"] / "helm"
    if not os.access(path, os.X_OK):
        raise FileNotFoundError(f"helm not found at {path}: run scripts/controlplane.sh or set GRAFT_HELM")
    return path


class HelmError(RuntimeError):
    """helm exited non-zero; the message carries its stderr."""


def helm(*args: str, stdin: str | None = None) -> str:
    """Run helm with throwaway config/cache/data dirs (no repositories, no network); returns stdout."""
    home = Path(os.environ.get("TMPDIR", "/tmp")) / "graft-helm"
    env = {**os.environ, "HELM_CACHE_HOME": str(home / "cache"), "HELM_CONFIG_HOME": str(home / "config"),
           "HELM_DATA_HOME": str(home / "data")}
    proc = subprocess.run([str(helm_binary()), *args], input=stdin, capture_output=True, text=True, env=env,
                          timeout=120)
    if proc.returncode != 0:
        raise HelmError(f"helm {' '.join(args)} failed (rc={proc.returncode}):\n{proc.stderr or proc.stdout}")
    return proc.stdout


def render_chart(
    values: dict[str, Any] | None = None,
    *,
    release: str = RELEASE,
    namespace: str = OPERATOR_NAMESPACE,
) -> list[dict[str, Any]]:
    """``helm template`` the chart with ``values`` (a dict, passed as a values file on stdin);
    returns the rendered objects (CRDs not included). Raises HelmError when helm refuses."""
    out = helm("template", release, str(CHART), "--namespace", namespace, "--kube-version", KUBE_VERSION,
               "--values", "-", stdin=json.dumps(values or {}))
    return [d for d in yaml.safe_load_all(out) if d]


def rbac_objects(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The ServiceAccount, (Cluster)Roles and bindings among rendered objects."""
    return [d for d in docs if d["kind"] in RBAC_KINDS]


def apply_objects(cp: ControlPlane, objects: list[dict[str, Any]]) -> None:
    """Server-side apply objects (namespaces they name must exist)."""
    if objects:
        cp.kubectl("apply", "--server-side", "--force-conflicts", "--field-manager=graft-tests", "-f", "-",
                   input=json.dumps({"apiVersion": "v1", "kind": "List", "items": objects}))


def ensure_namespace(cp: ControlPlane, name: str, labels: dict[str, str] | None = None) -> None:
    """Create (or update) a namespace with exactly this name."""
    doc = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": labels or {}}}
    apply_objects(cp, [doc])


def install_graft_crds(cp: ControlPlane) -> list[str]:
    """The chart's CRDs (graft.dev and kopf.dev peering), server-side applied, established."""
    return cp.install_crds(sorted(CRDS.glob("*.yaml")))


def apply_operator_rbac(
    cp: ControlPlane,
    values: dict[str, Any] | None = None,
    *,
    release: str = RELEASE,
    namespace: str = OPERATOR_NAMESPACE,
) -> list[dict[str, Any]]:
    """Render the chart and apply its operator ServiceAccount, (Cluster)Roles and bindings (and the
    tenant aggregated ClusterRoles) to the control plane. Returns the applied objects."""
    objects = rbac_objects(render_chart(values, release=release, namespace=namespace))
    ensure_namespace(cp, namespace)
    for ns in {o["metadata"]["namespace"] for o in objects if o["metadata"].get("namespace")}:
        ensure_namespace(cp, ns)
    apply_objects(cp, objects)
    return objects


def operator_kubeconfig(
    control_plane: ControlPlane,
    tmp_path: Path,
    *,
    values: dict[str, Any] | None = None,
    release: str = RELEASE,
    namespace: str = OPERATOR_NAMESPACE,
) -> Path:
    """Install the chart's CRDs and RBAC on the control plane and return a kubeconfig that
    authenticates as the chart's operator ServiceAccount (``system:serviceaccount:graft-system:graft``
    by default) with a real TokenRequest token. ``values`` are chart values (e.g.
    ``{"watchNamespaces": ["team-a"]}``); run ``graft operator`` with ``KUBECONFIG`` set to it.
    Use another ``release``/``namespace`` for a differently scoped operator in the same session:
    cluster-scoped names (ClusterRoles) carry the release name."""
    install_graft_crds(control_plane)
    objects = apply_operator_rbac(control_plane, values, release=release, namespace=namespace)
    sa = next(o for o in objects if o["kind"] == "ServiceAccount")["metadata"]["name"]
    token = control_plane.sa_token(namespace, sa, create=False)
    return control_plane.token_kubeconfig(token, tmp_path / f"{sa}.kubeconfig", user=f"{namespace}-{sa}")


def can_i(
    cp: ControlPlane,
    token: str,
    verb: str,
    resource: str,
    *,
    group: str = "",
    namespace: str | None = None,
    subresource: str | None = None,
) -> bool:
    """Ask the API server's authorizer (a real SelfSubjectAccessReview with ``token``) whether the
    token's identity may ``verb`` the resource; ``namespace=None`` asks cluster-wide."""
    attrs: dict[str, str] = {"verb": verb, "resource": resource, "group": group}
    if namespace:
        attrs["namespace"] = namespace
    if subresource:
        attrs["subresource"] = subresource
    body = {"apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectAccessReview",
            "spec": {"resourceAttributes": attrs}}
    req = urllib.request.Request(
        cp.server + "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews",
        data=json.dumps(body).encode(), method="POST",
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    context = ssl.create_default_context(cafile=str(cp.ca_file))
    with urllib.request.urlopen(req, context=context, timeout=30) as resp:
        return bool(json.loads(resp.read())["status"]["allowed"])


@contextmanager
def aggregation_controller(cp: ControlPlane, workdir: Path) -> Iterator[Path]:
    """Run kube-controller-manager's clusterrole-aggregation-controller (alone, next to the session's
    controller manager) while the block runs; yields its log file. Does nothing extra when the
    session's controller manager already runs that controller."""
    log = workdir / "kcm-aggregation.log"
    if "clusterrole-aggregation-controller" in cp.controllers:
        yield log
        return
    assert cp.bin_dir is not None, "control plane not started"
    args = [
        str(cp.bin_dir / "kube-controller-manager"),
        f"--kubeconfig={cp.kubeconfig}",
        f"--authentication-kubeconfig={cp.kubeconfig}",
        f"--authorization-kubeconfig={cp.kubeconfig}",
        "--leader-elect=false",
        "--bind-address=127.0.0.1",
        f"--secure-port={free_port()}",
        f"--cert-dir={workdir / 'kcm-aggregation-certs'}",
        "--controllers=clusterrole-aggregation-controller",
        "--use-service-account-credentials=false",
        "--v=1",
    ]
    proc = Process("kube-controller-manager (aggregation)", args, log, new_session=False, log_mode="wb").start()
    try:
        yield log
    finally:
        proc.stop(timeout=15)
