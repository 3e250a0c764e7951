"""Graft installed on the real node as a user would: images in containerd, `helm install` of the
chart (operator Pod under the chart's ServiceAccount), hostPath storage for one tenant namespace.

Used by the flagship and the examples on the node (test_flagship_kuberay.py, test_examples_kuberay.py); the node, control plane and KubeRay
fixtures come from tests/kuberay/conftest.py.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from testbed.controlplane import ControlPlane
from testbed.kubenode import KubeNode
from testbed.process import wait_until
from tests.integration.rbac import CHART, helm

REPO = Path(__file__).resolve().parents[2]
# Not "graft": the integration layer applies the chart's cluster-scoped RBAC (graft-edit, ...)
# without Helm on the same session control plane, and Helm refuses to adopt those objects.
RELEASE = "graft-flagship"
STORAGE_CLAIM = "graft-storage"
STORAGE_GROUP = 2000  # the chart's operator.storageGroup default
# Sized for a 2-core node (allocatable 2000m, of which the operator and CoreDNS take 200m): see
# examples/finetune-kubernetes.yaml. HTTPMode saves KubeRay's 500m submitter pod, so a one-worker
# job (head 250m + worker 500m) fits next to the serving endpoint (head 250m + autoscaler 200m +
# one Serve worker 500m) for the promotion stage.
# The head's limit is 1 CPU: at 250m, `ray start --head` outlasts Ray's 60 s startup timeout when the
# node is busy, and the head restarts.
SIZING = {"headCpu": "250m", "headCpuLimit": "1", "submissionMode": "HTTPMode"}


def load_images(node: KubeNode) -> float:
    """scripts/images.sh load into the node's containerd; returns the seconds it took."""
    t0 = time.monotonic()
    env = {**os.environ, "CONTAINERD_ADDRESS": str(node.socket)}
    proc = subprocess.run([str(REPO / "scripts" / "images.sh"), "load"], env=env, capture_output=True,
                          text=True, timeout=3600)
    assert proc.returncode == 0, f"scripts/images.sh load failed:\n{proc.stderr[-4000:]}"
    return time.monotonic() - t0


@dataclass
class Release:
    cp: ControlPlane
    namespace: str  # the operator's
    tenant: str
    storage: Path  # on the node, mounted at the same path in every pod
    timings: dict[str, float] = field(default_factory=dict)

    def kubectl(self, *args: str, **kw: Any) -> subprocess.CompletedProcess:
        return self.cp.kubectl(*args, **kw)

    def get(self, kind: str, name: str, namespace: str | None = None) -> dict[str, Any] | None:
        p = self.cp.kubectl("get", kind, name, "-n", namespace or self.tenant, "-o", "json", check=False)
        return json.loads(p.stdout) if p.returncode == 0 else None

    def items(self, kind: str, *selector: str, namespace: str | None = None) -> list[dict[str, Any]]:
        out = self.cp.kubectl_json("get", kind, "-n", namespace or self.tenant, *selector)
        return list(out.get("items") or [])


@contextmanager
def installed(cp: ControlPlane, node: KubeNode, storage: Path, name: str) -> Iterator[Release]:
    """Images loaded, the chart installed with hostPath `storage` (owned by the storage group, setgid
    2770, never world-writable: Ray pods run as uid 1000 and the operator as 65532, both in that
    group; docs/install.md#storage) for one new tenant namespace; all of it removed afterwards, the
    timings printed under `name`."""
    images_s = load_images(node)
    prepare_storage(storage)
    operator_ns = cp.create_namespace(prefix="graft-system")
    tenant = cp.create_namespace(prefix="team")
    rel = install(cp, storage, operator_ns, tenant)
    rel.timings["images load"] = images_s
    try:
        yield rel
    finally:
        cp.kubectl("delete", "finetunejobs,modelendpoints", "--all", "-n", tenant, "--wait=false", check=False)
        cp.delete_namespace(tenant, wait=True, timeout=300)
        uninstall(rel)
        cp.delete_namespace(operator_ns, wait=True, timeout=120)
        print(f"\n{name} timings (s):", json.dumps({k: round(v, 1) for k, v in rel.timings.items()}, indent=1))


def prepare_storage(storage: Path) -> None:
    """The node directory of hostPath storage as docs/install.md#storage says: `install -d -m 2770 -g GID`."""
    os.chown(storage, 0, STORAGE_GROUP)
    storage.chmod(0o2770)


def install(cp: ControlPlane, storage: Path, operator_ns: str, tenant: str, extra: dict[str, Any] | None = None) -> Release:
    """`helm install` the chart with hostPath storage for `tenant` and wait for the operator pod."""
    values: dict[str, Any] = {
        "operator": {"storagePvc": STORAGE_CLAIM, "storageMountPath": str(storage), "verbose": True, **SIZING},
        "hostPathStorage": {"enabled": True, "path": str(storage), "namespaces": [tenant]},
        "tenancy": {"requirePolicy": False},  # one tenant and no FineTunePolicy: the single-team value
        **(extra or {}),
    }
    t0 = time.monotonic()
    helm("install", RELEASE, str(CHART), "--namespace", operator_ns, "--values", "-",
         "--kubeconfig", str(cp.kubeconfig), stdin=json.dumps(values))
    release = Release(cp, operator_ns, tenant, storage)
    wait_until(lambda: _available(release), timeout=300, interval=2, what="the operator Deployment to be available")
    release.timings["helm install -> operator ready"] = time.monotonic() - t0
    return release


def _available(release: Release) -> bool:
    dep = release.get("deployment", RELEASE, release.namespace) or {}
    conds = (dep.get("status") or {}).get("conditions") or []
    return any(c["type"] == "Available" and c["status"] == "True" for c in conds)


def leftovers(release: Release) -> list[str]:
    """What still runs in the tenant namespace: pods, Services and KubeRay objects."""
    kinds = "pods,services,rayclusters.ray.io,rayjobs.ray.io,rayservices.ray.io"
    return list(release.cp.kubectl("get", kinds, "-n", release.tenant, "-o", "name").stdout.split())


def uninstall(release: Release) -> None:
    helm("uninstall", RELEASE, "--namespace", release.namespace, "--kubeconfig", str(release.cp.kubeconfig))


def service_url(release: Release, name: str, port_name: str) -> str:
    """http://CLUSTER-IP:PORT of a Service in the tenant namespace (kube-proxy routes it from the
    node); for a headless Service (KubeRay's head Services), the first ready endpoint's pod IP."""
    svc = release.get("service", name)
    assert svc is not None, f"Service {release.tenant}/{name} does not exist"
    (port,) = [p["port"] for p in svc["spec"]["ports"] if p.get("name") == port_name]
    host = svc["spec"].get("clusterIP")
    if host in (None, "", "None"):
        slices = release.items("endpointslices.discovery.k8s.io", "-l", f"kubernetes.io/service-name={name}")
        ready = [a for sl in slices for ep in sl.get("endpoints") or []
                 if (ep.get("conditions") or {}).get("ready") for a in ep["addresses"]]
        assert ready, f"headless Service {release.tenant}/{name} has no ready endpoint"
        host = ready[0]
    return f"http://{host}:{port}"


def graft_cli(release: Release, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    env = {**os.environ, "KUBECONFIG": str(release.cp.kubeconfig), "PYTHONPATH": str(REPO)}
    return subprocess.run([str(REPO / ".venv" / "bin" / "graft"), *args], env=env, capture_output=True,
                          text=True, timeout=timeout)
