"""Configuration files and manifests of the one-node cluster (testbed/kubenode.py).

Pure functions from paths and versions to file contents; JSON is valid YAML, so every
Kubernetes config file here is written as JSON.
"""

from __future__ import annotations

import json
from pathlib import Path

from testbed.nodehost import BRIDGE, NODE_IP, POD_CIDR

NODE_NAME = "graft-node"
SERVICE_CIDR = "10.0.0.0/24"  # testbed/controlplane.py's --service-cluster-ip-range
DNS_IP = "10.0.0.10"
CLUSTER_DOMAIN = "cluster.local"
CNI_BIN_DIR = "/usr/lib/cni"  # Debian's containernetworking-plugins
# containerd's environment: no image ever comes from outside the machine. Registry requests
# go to a closed loopback "proxy", so a missing image fails at once (ErrImagePull).
CONTAINERD_ENV = {"HTTP_PROXY": "http://127.0.0.1:9", "HTTPS_PROXY": "http://127.0.0.1:9",
                  "NO_PROXY": "", "http_proxy": "", "https_proxy": "", "no_proxy": ""}


def containerd_toml(root: Path, run: Path, sandbox_image: str) -> str:
    """containerd 1.6 config (version 2): own root (persistent: imported images survive),
    state and socket; the CRI plugin with our sandbox image, CNI dirs and runc on cgroupfs.
    ``restrict_oom_score_adj``: root in this VM lacks CAP_SYS_RESOURCE, and runc cannot
    create any sandbox without it."""
    return f"""version = 2
root = "{root}"
state = "{run / 'containerd'}"
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.internal.v1.tracing"]

[grpc]
  address = "{run / 'containerd.sock'}"

[ttrpc]
  address = "{run / 'containerd-ttrpc.sock'}"

[plugins."io.containerd.internal.v1.opt"]
  path = "{run / 'opt'}"

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{sandbox_image}"
  restrict_oom_score_adj = true
  netns_mounts_under_state_dir = true
  enable_selinux = false
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{CNI_BIN_DIR}"
    conf_dir = "{run / 'cni'}"
"""


def cni_conflist(run: Path) -> str:
    """A bridge on the node IP with host-local addresses: no masquerading (pod traffic
    never leaves the machine: testbed/nodehost.py also drops it), hairpin for pod ->
    own Service, portmap for hostPorts."""
    return json.dumps({
        "cniVersion": "1.0.0",
        "name": "graft",
        "plugins": [
            {"type": "bridge", "bridge": BRIDGE, "isGateway": True, "ipMasq": False,
             "hairpinMode": True,
             "ipam": {"type": "host-local", "dataDir": str(run / "cni-ipam"),
                      "ranges": [[{"subnet": POD_CIDR, "gateway": NODE_IP}]],
                      "routes": [{"dst": "0.0.0.0/0"}]}},
            {"type": "portmap", "capabilities": {"portMappings": True}},
        ],
    }, indent=2)


def kubelet_config(run: Path, ca_file: Path) -> str:
    return json.dumps({
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        "address": NODE_IP,
        "port": 10250,
        "readOnlyPort": 0,
        "healthzBindAddress": "127.0.0.1",
        "healthzPort": 10248,
        "cgroupDriver": "cgroupfs",
        "failCgroupV1": False,  # this VM has cgroup v1 (hybrid)
        "failSwapOn": False,
        "containerRuntimeEndpoint": f"unix://{run / 'containerd.sock'}",
        "imageServiceEndpoint": f"unix://{run / 'containerd.sock'}",
        "authentication": {"x509": {"clientCAFile": str(ca_file)},
                           "webhook": {"enabled": True}, "anonymous": {"enabled": False}},
        "authorization": {"mode": "Webhook"},
        "clusterDNS": [DNS_IP],
        "clusterDomain": CLUSTER_DOMAIN,
        "resolvConf": str(run / "resolv.conf"),
        "podLogsDir": str(run / "pod-logs"),
        "evictionHard": {"memory.available": "100Mi", "nodefs.available": "1%",
                         "imagefs.available": "1%", "nodefs.inodesFree": "1%"},
        "imageGCHighThresholdPercent": 100,
        "imageGCLowThresholdPercent": 99,
        "serializeImagePulls": False,
        "rotateCertificates": False,
        "registerNode": True,
        "nodeStatusUpdateFrequency": "2s",
        "syncFrequency": "10s",
        "fileCheckFrequency": "10s",
    }, indent=2)


def kube_proxy_config(kubeconfig: Path) -> str:
    """iptables mode; host sysctls left alone (conntrack sizes and timeouts, route_localnet);
    NodePorts only on the node IP."""
    return json.dumps({
        "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
        "kind": "KubeProxyConfiguration",
        "clientConnection": {"kubeconfig": str(kubeconfig)},
        "hostnameOverride": NODE_NAME,
        "mode": "iptables",
        "clusterCIDR": POD_CIDR,
        "healthzBindAddress": "127.0.0.1:10256",
        "metricsBindAddress": "127.0.0.1:10249",
        "nodePortAddresses": [f"{NODE_IP}/32"],
        "conntrack": {"maxPerCore": 0, "min": 0, "tcpEstablishedTimeout": "0s",
                      "tcpCloseWaitTimeout": "0s"},
        "iptables": {"localhostNodePorts": False, "minSyncPeriod": "0s", "syncPeriod": "30s"},
    }, indent=2)


COREFILE = f""".:53 {{
    errors
    health :8080
    ready :8181
    kubernetes {CLUSTER_DOMAIN} in-addr.arpa ip6.arpa {{
        pods insecure
        fallthrough in-addr.arpa ip6.arpa
        ttl 5
    }}
    cache 5
}}
"""  # no `forward`: cluster names only, nothing is resolved outside the machine


def coredns_manifests(image: str) -> list[dict]:
    """CoreDNS as a Deployment behind the kube-dns Service at the cluster DNS IP."""
    labels = {"k8s-app": "kube-dns"}
    meta = {"name": "coredns", "namespace": "kube-system"}
    container = {
        "name": "coredns", "image": image, "imagePullPolicy": "Never",
        "args": ["-conf", "/etc/coredns/Corefile"],
        "ports": [{"containerPort": 53, "protocol": "UDP", "name": "dns"},
                  {"containerPort": 53, "protocol": "TCP", "name": "dns-tcp"}],
        "readinessProbe": {"httpGet": {"path": "/ready", "port": 8181},
                           "periodSeconds": 1, "failureThreshold": 3},
        "resources": {"requests": {"cpu": "10m", "memory": "30Mi"},
                      "limits": {"memory": "170Mi"}},
        "volumeMounts": [{"name": "config", "mountPath": "/etc/coredns", "readOnly": True}],
    }
    return [
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": meta},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
         "metadata": {"name": "system:coredns"},
         "rules": [{"apiGroups": [""], "resources": ["endpoints", "services", "pods", "namespaces"],
                    "verbs": ["list", "watch"]},
                   {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"],
                    "verbs": ["list", "watch"]}]},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
         "metadata": {"name": "system:coredns"},
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                     "name": "system:coredns"},
         "subjects": [{"kind": "ServiceAccount", "name": "coredns", "namespace": "kube-system"}]},
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta,
         "data": {"Corefile": COREFILE}},
        {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {**meta, "labels": labels},
         "spec": {"replicas": 1, "selector": {"matchLabels": labels},
                  "template": {"metadata": {"labels": labels}, "spec": {
                      "serviceAccountName": "coredns", "dnsPolicy": "Default",
                      "priorityClassName": "system-cluster-critical",
                      "terminationGracePeriodSeconds": 1,
                      "containers": [container],
                      "volumes": [{"name": "config", "configMap": {"name": "coredns"}}]}}}},
        {"apiVersion": "v1", "kind": "Service",
         "metadata": {"name": "kube-dns", "namespace": "kube-system", "labels": labels},
         "spec": {"selector": labels, "clusterIP": DNS_IP,
                  "ports": [{"name": "dns", "port": 53, "protocol": "UDP"},
                            {"name": "dns-tcp", "port": 53, "protocol": "TCP"}]}},
    ]
