"""Real Kueue on the real node: a ClusterQueue with a CPU quota shared by two tenants.

Two FineTuneJobs fill the quota and run; a third waits with its RayJob suspended and its
status saying why; Graft never un-suspends it (its queue comes from a FineTunePolicy
default); when the first job is deleted, Kueue admits the third and KubeRay runs it.
"""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path
from typing import Any, Iterator

import pytest

from testbed.addons import KubeRayOperator, Kueue
from testbed.controlplane import ControlPlane
from testbed.kubenode import KubeNode
from testbed.operator import OperatorProcess
from tests.integration.helpers import FTJ, RJ, apply, finetunejob, get, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.kuberay, pytest.mark.slow]

KUEUE_API = "kueue.x-k8s.io/v1beta2"
QUEUE = "tenant-queue"
QUEUE_LABEL = "kueue.x-k8s.io/queue-name"


def cpu_millis(quantity: str) -> int:
    return int(quantity[:-1]) if quantity.endswith("m") else int(float(quantity) * 1000)


def workload_cpu_millis(workload: dict[str, Any]) -> int:
    """CPU a Kueue Workload asks for: every pod set's count x its containers' requests."""
    total = 0
    for ps in workload["spec"]["podSets"]:
        per_pod = sum(cpu_millis((c.get("resources") or {}).get("requests", {}).get("cpu", "0"))
                      for c in ps["template"]["spec"]["containers"])
        total += ps["count"] * per_pod
    return total


def workload_of(cp: ControlPlane, rayjob: str, ns: str) -> dict[str, Any] | None:
    items = cp.kubectl_json("get", "workloads.kueue.x-k8s.io", "-n", ns)["items"]
    return next((w for w in items if any(o.get("name") == rayjob and o.get("kind") == "RayJob"
                                         for o in w["metadata"].get("ownerReferences") or [])), None)


def rayjob_of(cp: ControlPlane, ftj: str, ns: str) -> dict[str, Any] | None:
    st = (get(cp, FTJ, ftj, ns) or {}).get("status") or {}
    name = st.get("rayJobName")
    return get(cp, RJ, name, ns) if name else None


def kueue_state(cp: ControlPlane, cq: str, *namespaces: str) -> str:
    """The ClusterQueue's usage and every Workload's conditions, for failure messages."""
    lines = [f"ClusterQueue {cq}: {json.dumps(cp.kubectl_json('get', 'clusterqueues.kueue.x-k8s.io', cq).get('status'))}"]
    for ns in namespaces:
        for w in cp.kubectl_json("get", "workloads.kueue.x-k8s.io", "-n", ns)["items"]:
            conds = [(c["type"], c["status"], c.get("reason"), c.get("message"))
                     for c in (w.get("status") or {}).get("conditions") or []]
            lines.append(f"Workload {ns}/{w['metadata']['name']}: {conds}")
    return "\n".join(lines)


def suspended(rayjob: dict[str, Any] | None) -> bool | None:
    return None if rayjob is None else bool(rayjob["spec"].get("suspend"))


@pytest.fixture
def tenants(control_plane: ControlPlane, kube_node: KubeNode, kueue: Kueue,
            kuberay_operator: KubeRayOperator, tmp_path: Path) -> Iterator[dict[str, Any]]:
    """Two tenant namespaces, each with a LocalQueue on one ClusterQueue (quota set by the
    test), tenant b getting its queue from a FineTunePolicy default; `graft operator`
    watching both."""
    cp = control_plane
    cp.install_crds([Path(__file__).resolve().parents[2] / "charts" / "graft" / "crds" / "graft.dev.yaml"])
    suffix = uuid.uuid4().hex[:6]
    cq, flavor, policy = f"graft-cq-{suffix}", f"graft-flavor-{suffix}", f"graft-queue-{suffix}"
    ns_a, ns_b = cp.create_namespace("tenant-a"), cp.create_namespace("tenant-b")
    cp.kubectl("label", "namespace", ns_b, f"graft-test/queue-default={suffix}")
    cluster_objs = [
        {"apiVersion": KUEUE_API, "kind": "ResourceFlavor", "metadata": {"name": flavor}},
        {"apiVersion": KUEUE_API, "kind": "ClusterQueue", "metadata": {"name": cq}, "spec": {
            "namespaceSelector": {}, "queueingStrategy": "BestEffortFIFO",
            "resourceGroups": [{"coveredResources": ["cpu", "memory"], "flavors": [{
                "name": flavor, "resources": [{"name": "cpu", "nominalQuota": "0"},
                                              {"name": "memory", "nominalQuota": "1000Gi"}]}]}]}},
        {"apiVersion": "graft.dev/v1alpha1", "kind": "FineTunePolicy", "metadata": {"name": policy},
         "spec": {"namespaceSelector": {"matchLabels": {"graft-test/queue-default": suffix}},
                  "runtimeDefaults": {"queueName": QUEUE}}},
    ]
    cp.kubectl("apply", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List", "items": cluster_objs}))
    for ns in (ns_a, ns_b):
        apply(cp, {"apiVersion": KUEUE_API, "kind": "LocalQueue", "metadata": {"name": QUEUE},
                   "spec": {"clusterQueue": cq}}, ns)
    op = OperatorProcess(cp, ns_a, tmp_path, "--namespace", ns_b, "--image-pull-policy", "Never").start()
    try:
        yield {"cq": cq, "a": ns_a, "b": ns_b, "operator": op, "kueue": kueue}
    finally:
        op.stop()
        for ns in (ns_a, ns_b):
            cp.delete_namespace(ns, wait=True, timeout=180)
        for kind, name in (("finetunepolicy", policy), ("clusterqueue", cq), ("resourceflavor", flavor)):
            cp.kubectl("delete", kind, name, "--ignore-not-found", "--wait=false", check=False)


def small_job(name: str, ns: str, *, queue: str | None) -> dict[str, Any]:
    """One worker of half a CPU; results on an object store (the RayJob path needs storage
    every pod reaches; nothing is written here: the pods' image is absent)."""
    runtime = {"queueName": queue} if queue else {}
    return finetunejob(name, storage=f"s3://graft-kueue-test/{ns}", runtime=runtime,
                       resources={"workers": 1, "cpusPerWorker": 0.5})


def waiting_for_kueue(ftj: dict[str, Any] | None) -> dict[str, Any] | None:
    """The FineTuneJob condition that says Kueue holds the job (Graft's reason names Kueue)."""
    conds = ((ftj or {}).get("status") or {}).get("conditions") or []
    return next((c for c in conds if c.get("reason") in ("QueuedByKueue", "WaitingForQuota")), None)


def test_third_job_waits_suspended_then_runs_when_quota_frees(control_plane: ControlPlane,
                                                              tenants: dict[str, Any]) -> None:
    cp, ns_a, ns_b = control_plane, tenants["a"], tenants["b"]
    op: OperatorProcess = tenants["operator"]
    # 1. Job a1 names its queue; its RayJob is created suspended and Kueue makes a Workload.
    apply(cp, small_job("a1", ns_a, queue=QUEUE), ns_a)
    rj_a1 = wait_for(lambda: rayjob_of(cp, "a1", ns_a), timeout=90, what=f"RayJob of a1; operator log:\n{op.log_tail()}")
    assert rj_a1["metadata"]["labels"][QUEUE_LABEL] == QUEUE
    workload = wait_for(lambda: workload_of(cp, rj_a1["metadata"]["name"], ns_a), timeout=60,
                        what=f"Kueue Workload of a1; kueue log:\n{tenants['kueue'].log_tail()}")
    per_job = workload_cpu_millis(workload)
    assert per_job > 0
    # 2. Quota for exactly two such jobs: a1 and b1 (queue from the policy default) run.
    cp.kubectl("patch", "clusterqueue", tenants["cq"], "--type=json", "-p", json.dumps([{
        "op": "replace", "path": "/spec/resourceGroups/0/flavors/0/resources/0/nominalQuota",
        "value": f"{2 * per_job}m"}]))
    wait_for(lambda: suspended(rayjob_of(cp, "a1", ns_a)) is False, timeout=60, what="Kueue admits a1")
    apply(cp, small_job("b1", ns_b, queue=None), ns_b)
    wait_for(lambda: suspended(rayjob_of(cp, "b1", ns_b)) is False, timeout=90,
             what=lambda: f"Kueue admits b1\n{kueue_state(cp, tenants['cq'], ns_a, ns_b)}")
    assert rayjob_of(cp, "b1", ns_b)["metadata"]["labels"][QUEUE_LABEL] == QUEUE  # from the policy
    # 3. The third job does not fit: suspended, and its status says why.
    apply(cp, small_job("b2", ns_b, queue=None), ns_b)
    rj_b2 = wait_for(lambda: rayjob_of(cp, "b2", ns_b), timeout=90, what="RayJob of b2")
    wl_b2 = wait_for(lambda: workload_of(cp, rj_b2["metadata"]["name"], ns_b), timeout=60, what="Workload of b2")
    pending = wait_for(lambda: next((c for c in (get(cp, "workloads.kueue.x-k8s.io", wl_b2["metadata"]["name"], ns_b)
                                                  or {}).get("status", {}).get("conditions", [])
                                     if c["type"] == "QuotaReserved" and c["status"] == "False"), None),
                       timeout=60, what="Kueue reports b2 pending")
    assert "insufficient" in pending["message"]
    try:
        queued = wait_for(lambda: waiting_for_kueue(get(cp, FTJ, "b2", ns_b)), timeout=60,
                          what="b2's status says Kueue holds it")
    except TimeoutError as exc:
        raise AssertionError(f"{exc}\nFineTuneJob status: {(get(cp, FTJ, 'b2', ns_b) or {}).get('status')}\n"
                             f"RayJob: {json.dumps(rayjob_of(cp, 'b2', ns_b))}\noperator log:\n{op.log_tail()}") from exc
    assert QUEUE in queued["message"]
    assert (get(cp, FTJ, "b2", ns_b) or {})["status"]["phase"] == "Pending"
    # 4. Graft leaves spec.suspend to Kueue: over several operator resyncs (2 s) nobody
    #    writes b2's RayJob spec (an un-suspend, even one Kueue reverted, bumps generation).
    generation = rayjob_of(cp, "b2", ns_b)["metadata"]["generation"]
    time.sleep(10)  # a window of 5 resyncs, not a wait for a condition
    rj_b2 = rayjob_of(cp, "b2", ns_b)
    assert (rj_b2["metadata"]["generation"], suspended(rj_b2)) == (generation, True)
    # 5. Quota frees: Kueue admits b2 and KubeRay creates its Ray cluster.
    cp.kubectl("delete", FTJ, "a1", "-n", ns_a, "--wait=false")
    wait_for(lambda: suspended(rayjob_of(cp, "b2", ns_b)) is False, timeout=120, what="Kueue admits b2 after a1 is gone")
    wait_for(lambda: cp.kubectl_json("get", "rayclusters.ray.io", "-n", ns_b, "-l",
                                     f"ray.io/originated-from-cr-name={rj_b2['metadata']['name']}")["items"],
             timeout=90, what="KubeRay creates b2's RayCluster")
