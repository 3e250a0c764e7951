"""The real KubeRay operator on the real node: it reconciles KubeRay resources into pods."""

from __future__ import annotations

import json

import pytest

from testbed.addons import KubeRayOperator
from testbed.controlplane import ControlPlane
from testbed.kubenode import KubeNode
from testbed.process import wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.kuberay, pytest.mark.slow]


def raycluster(name: str, image: str, workers: int = 1) -> dict:
    container = {"name": "ray", "image": image, "imagePullPolicy": "IfNotPresent",
                 "resources": {"requests": {"cpu": "100m", "memory": "64Mi"},
                               "limits": {"cpu": "500m", "memory": "512Mi"}}}
    return {
        "apiVersion": "ray.io/v1", "kind": "RayCluster", "metadata": {"name": name},
        "spec": {
            "headGroupSpec": {"rayStartParams": {}, "template": {"spec": {
                "containers": [{**container, "name": "ray-head"}]}}},
            "workerGroupSpecs": [{"groupName": "workers", "replicas": workers, "minReplicas": 0,
                                  "maxReplicas": workers, "rayStartParams": {},
                                  "template": {"spec": {"containers": [{**container, "name": "ray-worker"}]}}}],
        },
    }


def test_kuberay_creates_head_and_worker_pods_for_a_raycluster(
    control_plane: ControlPlane, kube_node: KubeNode, kuberay_operator: KubeRayOperator,
    node_namespace: str,
) -> None:
    # An image that is not on the node: the pods exist (scheduled on graft-node) but cannot
    # start; pulling fails locally at once, nothing leaves the machine.
    control_plane.kubectl("apply", "-n", node_namespace, "-f", "-",
                          input=json.dumps(raycluster("smoke", "graft.local/absent:none", workers=1)))

    def pods() -> list[dict] | None:
        items = control_plane.kubectl_json("get", "pods", "-n", node_namespace,
                                           "-l", "ray.io/cluster=smoke")["items"]
        kinds = sorted(p["metadata"]["labels"].get("ray.io/node-type") for p in items)
        return items if kinds == ["head", "worker"] else None

    items = wait_until(pods, timeout=90, interval=0.5,
                       what=f"KubeRay head and worker pods; operator log:\n{kuberay_operator.log_tail()}")
    assert all(p["spec"].get("nodeName") == "graft-node" for p in items) or wait_until(
        lambda: all(p["spec"].get("nodeName") == "graft-node" for p in pods() or []), timeout=30,
        what="pods scheduled on graft-node")
    services = control_plane.kubectl_json("get", "services", "-n", node_namespace,
                                          "-l", "ray.io/cluster=smoke")["items"]
    assert any(s["metadata"]["name"].startswith("smoke-head") for s in services)


def test_raycluster_with_the_ray_image_becomes_ready(
    control_plane: ControlPlane, kube_node: KubeNode, kuberay_operator: KubeRayOperator,
    ray_image: str, node_namespace: str,
) -> None:
    cluster = raycluster("ray", ray_image, workers=0)
    head = cluster["spec"]["headGroupSpec"]["template"]["spec"]["containers"][0]
    head["resources"] = {"requests": {"cpu": "500m", "memory": "1Gi"}, "limits": {"cpu": "1", "memory": "2Gi"}}
    head["env"] = [{"name": "RAY_USAGE_STATS_ENABLED", "value": "0"}]
    control_plane.kubectl("apply", "-n", node_namespace, "-f", "-", input=json.dumps(cluster))

    def state() -> str | None:
        rc = control_plane.kubectl_json("get", "raycluster", "ray", "-n", node_namespace)
        return (rc.get("status") or {}).get("state") == "ready" and rc["status"]["state"]

    try:
        wait_until(state, timeout=300, interval=2, what="RayCluster ready")
    except TimeoutError as exc:
        raise AssertionError(f"{exc}\n{kube_node.report(node_namespace)}\n"
                             f"KubeRay operator log:\n{kuberay_operator.log_tail()}") from exc
    pod = control_plane.kubectl_json("get", "pods", "-n", node_namespace, "-l", "ray.io/node-type=head")["items"][0]
    assert pod["status"]["phase"] == "Running"
    out = control_plane.kubectl("exec", "-n", node_namespace, pod["metadata"]["name"], "--",
                                "python", "-c", "import ray, graft; print('ray', ray.__version__)")
    assert out.stdout.startswith("ray ")
