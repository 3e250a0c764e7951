"""The real one-node cluster itself: node, pods, Services, cluster DNS, logs/exec, isolation."""

from __future__ import annotations

import json

import pytest

from testbed.controlplane import ControlPlane
from testbed.kubenode import KubeNode
from testbed.nodeconfig import DNS_IP, NODE_NAME
from testbed.process import wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.kuberay]


def toolbox_pod(name: str, args: list[str], node: KubeNode, labels: dict | None = None) -> dict:
    return {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "labels": labels or {}},
        "spec": {
            "terminationGracePeriodSeconds": 0,
            "containers": [{"name": "main", "image": node.images["toolbox"],
                            "imagePullPolicy": "Never", "args": args}],
        },
    }


def apply(cp: ControlPlane, ns: str, *objs: dict) -> None:
    cp.kubectl("apply", "-n", ns, "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List",
                                                                "items": list(objs)}))


def wait_running(cp: ControlPlane, ns: str, name: str, node: KubeNode, timeout: float = 90) -> dict:
    def running() -> dict | None:
        pod = cp.kubectl_json("get", "pod", name, "-n", ns)
        return pod if pod["status"].get("phase") == "Running" else None

    try:
        return wait_until(running, timeout=timeout, interval=0.5, what=f"pod {ns}/{name} Running")
    except TimeoutError as exc:
        raise AssertionError(f"{exc}\n{node.report(ns)}") from exc


def test_node_is_ready_with_the_pinned_kubelet(control_plane: ControlPlane, kube_node: KubeNode) -> None:
    node = control_plane.kubectl_json("get", "node", NODE_NAME)
    ready = {c["type"]: c["status"] for c in node["status"]["conditions"]}["Ready"]
    assert ready == "True"
    assert node["status"]["nodeInfo"]["kubeletVersion"] == kube_node.versions["K8S_VERSION"]
    assert node["status"]["nodeInfo"]["containerRuntimeVersion"].startswith("containerd://")


def test_pod_runs_and_logs_and_exec_work(control_plane: ControlPlane, node_namespace: str,
                                         kube_node: KubeNode) -> None:
    apply(control_plane, node_namespace,
          toolbox_pod("hello", ["sh", "-c", "echo hello from graft-node; sleep 3600"], kube_node))
    wait_running(control_plane, node_namespace, "hello", kube_node)
    wait_until(lambda: "hello from graft-node" in control_plane.kubectl(
        "logs", "hello", "-n", node_namespace).stdout, timeout=30, what="pod log line")
    out = control_plane.kubectl("exec", "hello", "-n", node_namespace, "--", "/bin/busybox", "cat", "/etc/resolv.conf")
    assert f"nameserver {DNS_IP}" in out.stdout
    assert f"search {node_namespace}.svc.cluster.local" in out.stdout


def test_service_reachable_by_cluster_ip_and_dns_name(control_plane: ControlPlane, node_namespace: str,
                                                      kube_node: KubeNode) -> None:
    ns = node_namespace
    server = toolbox_pod("web", ["sh", "-c", "mkdir /www && echo graft-ok > /www/index.html && "
                                 "httpd -f -p 8080 -h /www"], kube_node, labels={"app": "web"})
    service = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"},
               "spec": {"selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": 8080}]}}
    client = toolbox_pod("client", ["sleep", "3600"], kube_node)
    apply(control_plane, ns, server, service, client)
    wait_running(control_plane, ns, "web", kube_node)
    wait_running(control_plane, ns, "client", kube_node)
    cluster_ip = control_plane.kubectl_json("get", "service", "web", "-n", ns)["spec"]["clusterIP"]

    def exec_client(script: str) -> str:
        return control_plane.kubectl("exec", "client", "-n", ns, "--", "/bin/busybox", "sh", "-c", script,
                                     check=False).stdout

    lookup = wait_until(lambda: cluster_ip in (out := exec_client(
        f"nslookup web.{ns}.svc.cluster.local {DNS_IP}")) and out, timeout=60,
        what="DNS answer for the Service")
    assert cluster_ip in lookup
    body = wait_until(lambda: "graft-ok" in (out := exec_client(
        f"printf 'GET /index.html HTTP/1.0\\r\\n\\r\\n' | nc -w 5 {cluster_ip} 80")) and out,
        timeout=60, what="HTTP through the ClusterIP")
    assert "200 OK" in body


def test_pods_cannot_reach_beyond_the_node(control_plane: ControlPlane, node_namespace: str,
                                           kube_node: KubeNode) -> None:
    apply(control_plane, node_namespace, toolbox_pod("probe", ["sleep", "3600"], kube_node))
    wait_running(control_plane, node_namespace, "probe", kube_node)
    # TEST-NET-3: dropped by the node's egress chain before it could leave the machine.
    out = control_plane.kubectl("exec", "probe", "-n", node_namespace, "--", "/bin/busybox", "sh", "-c",
                                "nc -w 2 203.0.113.1 80 </dev/null; echo rc=$?", check=False)
    assert "rc=0" not in out.stdout
    drops = kube_node_drop_count()
    assert drops > 0


def kube_node_drop_count() -> int:
    from testbed.nodehost import EGRESS_CHAIN, run

    out = run("iptables", "-L", EGRESS_CHAIN, "-n", "-v", "-x").stdout
    rows = [ln.split() for ln in out.splitlines() if "DROP" in ln]
    return sum(int(r[0]) for r in rows)
