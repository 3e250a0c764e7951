"""Hostile tenant on the real node: a pod of its own, mounting its own storage claim, cannot see or
write another tenant's files (issue 21, finding 4).

The chart is installed in hostPath mode for two tenant namespaces: each tenant's claim is backed by
its own part `<storage>/<namespace>` only. team-b's pod writes a file into its part; team-a's pod
(as root, the most a namespace editor gets without a Pod Security admission) mounts team-a's claim,
looks for that file everywhere under its mount, reads and writes where team-b's part would be, and
tries to reach it through a `subPath` with `..` (refused by the API server). team-b's file is
untouched, and team-a saw nothing of it. The storage directories are setgid 2770 of the storage
group, never world-writable.
"""

from __future__ import annotations

import json
import stat
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import pytest

from graft import storage as graft_storage
from testbed.controlplane import ControlPlane
from testbed.kubenode import KubeNode
from testbed.process import wait_until
from tests.kuberay.release import STORAGE_CLAIM, STORAGE_GROUP, install, load_images, prepare_storage, uninstall

pytestmark = [pytest.mark.e2e, pytest.mark.kuberay, pytest.mark.tenancy, pytest.mark.timeout(1800)]

SECRET = "team-b-secret-4c1f"


@dataclass
class Tenants:
    cp: ControlPlane
    a: str
    b: str
    storage: Path
    image: str


@pytest.fixture(scope="module")
def tenants(control_plane: ControlPlane, kube_node: KubeNode, ray_image: str,
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[Tenants]:
    """The chart in hostPath mode for team-a and team-b; each tenant's part created as the operator
    creates it before a namespace's first Ray cluster (graft.storage.ensure_dir under the group-owned root)."""
    cp = control_plane
    load_images(kube_node)
    storage = tmp_path_factory.mktemp("graft-storage")
    prepare_storage(storage)
    operator_ns = cp.create_namespace(prefix="graft-system")
    a, b = cp.create_namespace(prefix="team-a"), cp.create_namespace(prefix="team-b")
    hostpath = {"enabled": True, "path": str(storage), "namespaces": [a, b]}
    release = install(cp, storage, operator_ns, a, extra={"hostPathStorage": hostpath})
    for ns in (a, b):
        graft_storage.ensure_dir(storage / ns)
    try:
        yield Tenants(cp, a, b, storage, ray_image)
    finally:
        for ns in (a, b):
            cp.delete_namespace(ns, wait=True, timeout=180)
        uninstall(release)
        cp.delete_namespace(operator_ns, wait=True, timeout=120)


def pod(name: str, image: str, script: str, uid: int, sub_path: str | None = None) -> dict[str, Any]:
    """A plain pod mounting the namespace's storage claim at /data and running `script`."""
    mount: dict[str, Any] = {"name": "data", "mountPath": "/data", **({"subPath": sub_path} if sub_path else {})}
    return {
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
        "spec": {
            "restartPolicy": "Never",
            "securityContext": {"runAsUser": uid, "supplementalGroups": [STORAGE_GROUP]},
            "containers": [{
                "name": "sh", "image": image, "imagePullPolicy": "IfNotPresent", "command": ["sh", "-c", script],
                "volumeMounts": [mount],
                "resources": {"requests": {"cpu": "50m", "memory": "64Mi"}, "limits": {"cpu": "200m", "memory": "128Mi"}},
            }],
            "volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": STORAGE_CLAIM}}],
        },
    }


def run(t: Tenants, namespace: str, doc: dict[str, Any]) -> str:
    """Apply the pod, wait until it has ended, return its log (it must have succeeded)."""
    t.cp.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(doc))
    name = doc["metadata"]["name"]

    def ended() -> str | None:
        out = t.cp.kubectl("get", "pod", name, "-n", namespace, "-o", "json", check=False)
        phase = (json.loads(out.stdout).get("status") or {}).get("phase") if out.returncode == 0 else None
        return phase if phase in ("Succeeded", "Failed") else None

    phase = wait_until(ended, timeout=300, interval=2, what=f"pod {namespace}/{name} to end")
    log = t.cp.kubectl("logs", name, "-n", namespace).stdout
    assert phase == "Succeeded", f"pod {namespace}/{name} {phase}:\n{log}"
    return log


@pytest.fixture(scope="module")
def victim_file(tenants: Tenants) -> Path:
    """team-b's pod (uid 1000, the storage group) writes its file into team-b's part."""
    run(tenants, tenants.b, pod("victim", tenants.image, f"echo {SECRET} > /data/secret.txt", uid=1000))
    path = tenants.storage / tenants.b / "secret.txt"
    assert path.read_text() == f"{SECRET}\n"
    return path


def test_a_tenant_pod_on_its_own_claim_neither_sees_nor_writes_another_tenants_files(
    tenants: Tenants, victim_file: Path,
) -> None:
    b = tenants.b
    script = "; ".join([
        "find /data -name secret.txt | sed 's/^/FOUND /'",
        f"cat /data/secret.txt /data/{b}/secret.txt /data/../secret.txt /data/../{b}/secret.txt 2>/dev/null",
        f"mkdir -p /data/{b} && echo pwned > /data/{b}/secret.txt; echo pwned > /data/secret.txt",
        "ls -la /data",
    ])
    t0 = time.monotonic()
    log = run(tenants, tenants.a, pod("attacker", tenants.image, script, uid=0))
    assert "FOUND" not in log and SECRET not in log, log
    assert victim_file.read_text() == f"{SECRET}\n"  # untouched
    assert (tenants.storage / tenants.a / b / "secret.txt").read_text() == "pwned\n"  # its writes stayed in its part
    print(f"attacker pod: {time.monotonic() - t0:.1f} s")


def test_a_sub_path_climbing_out_of_the_claim_is_refused(tenants: Tenants, victim_file: Path) -> None:
    doc = pod("climber", tenants.image, "cat /data/secret.txt", uid=0, sub_path=f"../{tenants.b}")
    out = tenants.cp.kubectl("apply", "-n", tenants.a, "-f", "-", input=json.dumps(doc), check=False)
    assert out.returncode != 0 and "'..'" in out.stderr, out.stderr
    assert victim_file.read_text() == f"{SECRET}\n"


def test_storage_directories_are_group_shared_and_never_world_writable(tenants: Tenants, victim_file: Path) -> None:
    for path in (tenants.storage, tenants.storage / tenants.a, tenants.storage / tenants.b):
        st = path.stat()
        assert stat.S_IMODE(st.st_mode) == 0o2770 and st.st_gid == STORAGE_GROUP, (path, oct(st.st_mode), st.st_gid)
