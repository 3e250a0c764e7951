"""kube-router as the test node's NetworkPolicy enforcer (opt-in: the tenancy node tests only).

The node's bridge CNI does not enforce NetworkPolicy. kube-router (built by scripts/kuberouter.sh
from github.com/cloudnativelabs/kube-router/v2, pinned in tools/kuberouter/go.mod) does, with
iptables and ipset, as a host process on the node: firewall only (no routing, no service proxy;
the node keeps its bridge CNI and kube-proxy). Its rules accept traffic whose source is the node
itself (the kubelet's probes, the out-of-cluster KubeRay operator) and apply every NetworkPolicy to
the pods of the node.

    enforcer = NetpolEnforcer(node).start()   # rules in place for the pods and policies there now
    enforcer.enforces(pod_ip, policy)         # True once that policy filters the pod's ingress
    enforcer.stop()                           # process stopped, its chains and ipsets removed
                                              # (remove_state(): also after a crashed run)

A test-node enforcer only: kube-router v2.1.0 has reported security flaws, see
docs/testing-control-plane.md. Standard library only.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import urllib.request
from pathlib import Path

from testbed import nodeconfig as cfg
from testbed.kubenode import KubeNode
from testbed.ports import free_port
from testbed.process import Process, ProcessError

REPO_ROOT = Path(__file__).resolve().parent.parent
BUILD_SCRIPT = REPO_ROOT / "scripts" / "kuberouter.sh"
# The chains (filter table) and ipsets kube-router's firewall creates. Its own cleanup mode
# (`--cleanup-config`) does not remove them in v2.1.0: it runs the firewall's cleanup on a controller
# with no iptables handlers (a no-op that logs success), then panics in the service proxy's cleanup.
# remove_state() removes them instead.
CHAIN_PREFIXES = ("KUBE-ROUTER-", "KUBE-POD-FW-", "KUBE-NWPLCY-")
IPSET_PREFIXES = ("KUBE-SRC-", "KUBE-DST-", "kube-router-")
BUILTIN_CHAINS = ("INPUT", "FORWARD", "OUTPUT")


def kube_router_binary() -> Path:
    """The cached kube-router binary (scripts/kuberouter.sh builds it on a cold cache: minutes)."""
    proc = subprocess.run(["bash", str(BUILD_SCRIPT)], capture_output=True, text=True, check=False)
    lines = proc.stdout.split()
    if proc.returncode != 0 or not lines:
        raise ProcessError(f"{BUILD_SCRIPT} failed (rc={proc.returncode}):\n{proc.stderr[-3000:]}")
    return Path(lines[-1])


def _filter_rules() -> list[str]:
    return subprocess.run(["iptables-save", "-t", "filter"], capture_output=True, text=True,
                          check=False).stdout.splitlines()


def _chains() -> list[str]:
    return [ln[1:].split()[0] for ln in _filter_rules() if ln.startswith(":") and ln[1:].startswith(CHAIN_PREFIXES)]


def _ipsets() -> list[str]:
    names = subprocess.run(["ipset", "list", "-n"], capture_output=True, text=True, check=False).stdout.split()
    return [n for n in names if n.startswith(IPSET_PREFIXES)]


def leftovers() -> list[str]:
    """kube-router's chains (filter table) and ipsets still on the host."""
    return _chains() + _ipsets()


def remove_state() -> list[str]:
    """Remove kube-router's firewall state: the jumps from the built-in chains (their comments hold
    spaces, hence shlex), its chains (flushed, then deleted), then its ipsets (no rule refers to them
    any more). Returns what is left (empty when clean)."""
    for ln in _filter_rules():
        parts = shlex.split(ln)
        if parts[:1] == ["-A"] and parts[1] in BUILTIN_CHAINS and "-j" in parts \
                and parts[parts.index("-j") + 1].startswith(CHAIN_PREFIXES):
            subprocess.run(["iptables", "-D", *parts[1:]], capture_output=True, check=False)
    chains = _chains()
    for action in ("-F", "-X"):
        for chain in chains:
            subprocess.run(["iptables", action, chain], capture_output=True, check=False)
    for name in _ipsets():
        subprocess.run(["ipset", "destroy", name], capture_output=True, check=False)
    return leftovers()


class NetpolEnforcer:
    def __init__(self, node: KubeNode, binary: Path | None = None) -> None:
        self.node = node
        self.binary = binary or kube_router_binary()
        self.health_port = free_port()
        self.log = node.run_dir / "logs" / "kube-router.log"
        self._proc: Process | None = None

    def argv(self) -> list[str]:
        return [
            str(self.binary), f"--kubeconfig={self.node.cp.kubeconfig}",
            f"--hostname-override={cfg.NODE_NAME}",
            "--run-firewall=true", "--run-router=false", "--run-service-proxy=false",
            "--enable-ipv4=true", "--enable-ipv6=false",
            f"--service-cluster-ip-range={cfg.SERVICE_CIDR}",
            f"--health-port={self.health_port}", "--metrics-port=0", "--v=1",
        ]

    def start(self, timeout: float = 120.0) -> "NetpolEnforcer":
        remove_state()  # a crashed run's rules would filter before this run's
        self._proc = Process("kube-router", self.argv(), self.log, env=dict(os.environ),
                             die_with_parent=True).start()
        try:
            self._proc.wait_ready(self._ready, timeout=timeout, interval=0.5)
        except BaseException:
            self.stop()
            raise
        return self

    def _ready(self) -> bool:
        """Healthy (its controllers heart-beating) and its top-level firewall chain in place."""
        url = f"http://127.0.0.1:{self.health_port}/healthz"
        with urllib.request.urlopen(url, timeout=5) as resp:
            if resp.status != 200:
                return False
        return ":KUBE-ROUTER-FORWARD " in self.rules()

    @staticmethod
    def rules() -> str:
        return subprocess.run(["iptables-save", "-t", "filter"], capture_output=True, text=True,
                              check=True).stdout

    def enforces(self, pod_ip: str, policy: str) -> bool:
        """The pod firewall chain of `pod_ip` runs its ingress through NetworkPolicy `policy`."""
        return any(f"-d {pod_ip}/32" in ln and f"run through nw policy {policy}" in ln
                   for ln in self.rules().splitlines())

    def stop(self) -> list[str]:
        """Stop kube-router and remove its chains and ipsets; returns what is left (empty: clean)."""
        if self._proc is not None:
            self._proc.stop(timeout=15)
            self._proc = None
        return remove_state()
