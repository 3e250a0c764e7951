"""A real one-node Kubernetes on this machine, joined to a testbed/controlplane.py control plane.

containerd (Debian) + runc + CNI bridge, kubelet, kube-proxy (iptables) and
kube-scheduler (built from k8s.io/kubernetes by scripts/controlplane.sh), CoreDNS as a
Deployment behind the kube-dns Service. One per machine (fixed ports, host-wide state):
callers hold :data:`LOCK_FILE` (tests/kuberay/conftest.py, testbed/cluster.py).

    cp = ControlPlane(node_ip=NODE_IP).start()
    node = KubeNode(cp).start()     # Ready node, pod network, Services, cluster DNS
    node.import_image(Path("ray.tar"))
    node.stop()                     # no processes, mounts, cgroups or iptables chains left

Directories (``GRAFT_NODE_DIR``, default /var/lib/graft-node): ``containerd/`` is
containerd's root and persists (imported images survive bring-ups); ``run/`` holds
everything of one bring-up and is removed by :meth:`stop`.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path

from testbed import nodeconfig as cfg
from testbed import nodehost
from testbed.controlplane import ControlPlane, ControlPlaneError
from testbed.oci import write_image
from testbed.pki import write_kubeconfig
from testbed.ports import free_port
from testbed.process import Process, wait_until

NODE_DIR = Path(os.environ.get("GRAFT_NODE_DIR", "/var/lib/graft-node"))
LOCK_FILE = Path(os.environ.get("GRAFT_NODE_LOCK", "/var/lock/graft-node.lock"))
NODE_IP = nodehost.NODE_IP
COMPONENTS = ("containerd", "kubelet", "kube-proxy", "kube-scheduler")


def _versions(bin_dir: Path) -> dict[str, str]:
    env = bin_dir.parent / "versions.env"
    return dict(ln.split("=", 1) for ln in env.read_text().split() if "=" in ln)


class KubeNode:
    def __init__(self, cp: ControlPlane, bin_dir: Path | None = None, *,
                 node_dir: Path = NODE_DIR, detached: bool = False) -> None:
        if cp.node_ip != NODE_IP:
            raise ControlPlaneError(f"the control plane must be started with node_ip={NODE_IP!r}")
        self.cp = cp
        self.bin_dir = bin_dir or (cp.bin_dir or Path())
        self.node_dir = node_dir
        self.run_dir = node_dir / "run"
        self.socket = self.run_dir / "containerd.sock"
        self.detached = detached
        self.versions = _versions(self.bin_dir)
        self.images = {
            "pause": f"graft.local/pause:{self.versions['K8S_VERSION']}",
            "coredns": f"graft.local/coredns:{self.versions['COREDNS_VERSION']}",
            "toolbox": "graft.local/toolbox:busybox",
        }
        self._procs: dict[str, Process] = {}
        self.timings: dict[str, float] = {}

    # --------------------------------------------------------------- lifecycle
    def start(self, timeout: float = 180.0) -> "KubeNode":
        state = self.run_dir / "node.json"
        if state.exists():
            self.cleanup_stale()
        try:
            self._start(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def _start(self, timeout: float) -> None:
        t0 = time.monotonic()
        for d in ("logs", "cni", "pod-logs", "kubelet", "pki"):
            (self.run_dir / d).mkdir(parents=True, exist_ok=True)
        (self.run_dir / "resolv.conf").write_text("# pods of graft-node: cluster DNS only\n")
        nodehost.setup_network(self.node_dir)
        self._start_containerd()
        if self.purge_containers():  # a crashed run left some: restart with clean CRI state
            self._stop("containerd")
            self._start_containerd()
        self._import_own_images()
        self.timings["containerd"] = round(time.monotonic() - t0, 2)
        self._start_kubelet()
        self._start_kube_proxy()
        self._start_scheduler()
        self._write_state()
        wait_until(self.node_ready, timeout=timeout, interval=0.5, what="node graft-node Ready")
        self.timings["node-ready"] = round(time.monotonic() - t0, 2)
        self.cp.kubectl("apply", "-f", "-", input=json.dumps(
            {"apiVersion": "v1", "kind": "List",
             "items": cfg.coredns_manifests(self.images["coredns"])}))
        self.cp.kubectl("rollout", "status", "-n", "kube-system", "deployment/coredns",
                        f"--timeout={int(timeout)}s", timeout=timeout + 10)
        self.timings["dns-ready"] = round(time.monotonic() - t0, 2)

    def stop(self) -> dict[str, object]:
        """Stop everything and undo the host changes. Returns what could not be removed
        (empty when the machine is clean)."""
        pids = self._state_pids()
        self._stop("kubelet", pids)
        if self.socket.exists() and self.ctr("version", check=False, timeout=15).returncode == 0:
            self.purge_containers()
        for name in ("containerd", "kube-proxy", "kube-scheduler"):
            self._stop(name, pids)
        proxy = self.bin_dir / "kube-proxy"
        if proxy.exists():
            subprocess.run([str(proxy), "--cleanup"], capture_output=True)
        left = nodehost.teardown(self.node_dir, self.run_dir, self.socket)
        if not left and os.environ.get("GRAFT_KEEP_NODE") != "1":
            shutil.rmtree(self.run_dir, ignore_errors=True)
        return left

    def cleanup_stale(self) -> None:
        """Stop and undo a bring-up whose owner died (its PIDs are in run/node.json)."""
        self.stop()

    # ---------------------------------------------------------------- helpers
    def node_ready(self) -> bool:
        """The Node reports Ready (raises while it is not registered yet)."""
        self._check_alive("kubelet")
        node = self.cp.api_get(f"/api/v1/nodes/{cfg.NODE_NAME}")
        conds = (node.get("status") or {}).get("conditions") or []
        return any(c["type"] == "Ready" and c["status"] == "True" for c in conds)

    def ctr(self, *args: str, check: bool = True, timeout: float = 600.0) -> subprocess.CompletedProcess:
        """``ctr`` against this node's containerd, namespace k8s.io (the CRI's)."""
        proc = subprocess.run(["ctr", "--address", str(self.socket), "-n", "k8s.io", *args],
                              capture_output=True, text=True, timeout=timeout)
        if check and proc.returncode != 0:
            raise ControlPlaneError(f"ctr {' '.join(args)} failed: {proc.stderr.strip()}")
        return proc

    def image_refs(self) -> set[str]:
        return set(self.ctr("images", "ls", "-q").stdout.split())

    def import_image(self, archive: Path, ref: str | None = None) -> None:
        """Import an OCI (or docker) image archive into the node's containerd, unless
        ``ref`` is already there (images persist across bring-ups). Pods then use it with
        ``imagePullPolicy: Never`` or ``IfNotPresent``."""
        if ref and ref in self.image_refs():
            return
        self.ctr("images", "import", str(archive))

    def purge_containers(self) -> int:
        """Kill and remove every container in the CRI namespace; returns how many."""
        for task in self.ctr("tasks", "ls", "-q", check=False).stdout.split():
            self.ctr("tasks", "rm", "-f", task, check=False)
        ids = self.ctr("containers", "ls", "-q", check=False).stdout.split()
        if ids:
            self.ctr("containers", "rm", *ids, check=False)
        return len(ids)

    def log_tail(self, name: str, lines: int = 40) -> str:
        path = self.run_dir / "logs" / f"{name}.log"
        if not path.exists():
            return f"(no log for {name})"
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])

    def report(self, namespace: str | None = None) -> str:
        """What to read when a pod does not run: the node's conditions and taints, free disk
        under the node's directory, the namespace's pods and events, and the kubelet's log tail."""
        cp = self.cp
        got = cp.kubectl("get", "node", cfg.NODE_NAME, "-o", "json", check=False, timeout=20)
        node = json.loads(got.stdout) if got.returncode == 0 else {}
        st = node.get("status") or {}
        du = shutil.disk_usage(self.node_dir)
        lines = [f"node conditions: {[(c['type'], c['status'], c.get('reason')) for c in st.get('conditions') or []]}",
                 f"node taints: {(node.get('spec') or {}).get('taints')}",
                 f"allocatable: {st.get('allocatable')}",
                 f"disk under {self.node_dir}: {du.free / 2**30:.1f} GiB free of {du.total / 2**30:.1f} GiB"]
        if namespace:
            for args in (("get", "pods", "-n", namespace, "-o", "wide"),
                         ("get", "events", "-n", namespace, "--sort-by=.lastTimestamp")):
                out = cp.kubectl(*args, check=False, timeout=20)
                lines.append(f"$ kubectl {' '.join(args)}\n{out.stdout}{out.stderr}")
        lines.append(f"kubelet log:\n{self.log_tail('kubelet', 30)}")
        return "\n".join(lines)

    # --------------------------------------------------------------- internals
    def _spawn(self, name: str, args: list[str], env: dict[str, str] | None = None) -> None:
        self._procs[name] = Process(name, args, self.run_dir / "logs" / f"{name}.log",
                                    env={**os.environ, **(env or {})}, die_with_parent=not self.detached).start()

    def _alive(self, name: str) -> bool:
        p = self._procs.get(name)
        return p is not None and p.running()

    def _check_alive(self, name: str) -> bool:
        if not self._alive(name):
            raise ControlPlaneError(f"{name} exited; log tail:\n{self.log_tail(name)}")
        return True

    def _stop(self, name: str, state_pids: dict[str, int] | None = None) -> None:
        """Stop a component started by this object, else the PID in run/node.json."""
        proc = self._procs.pop(name, None)
        if proc is not None:
            proc.stop(timeout=10)
        elif state_pids and name in state_pids:
            nodehost.stop_pid(state_pids[name], name)

    def _state_pids(self) -> dict[str, int]:
        state = self.run_dir / "node.json"
        return json.loads(state.read_text())["pids"] if state.exists() else {}

    def _write_state(self) -> None:
        (self.run_dir / "node.json").write_text(json.dumps(
            {"pids": {n: p.pid for n, p in self._procs.items()}}))

    def _start_containerd(self) -> None:
        root = self.node_dir / "containerd"
        root.mkdir(parents=True, exist_ok=True)
        conf = self.run_dir / "containerd.toml"
        conf.write_text(cfg.containerd_toml(root, self.run_dir, self.images["pause"]))
        (self.run_dir / "cni" / "10-graft.conflist").write_text(cfg.cni_conflist(self.run_dir))
        self._spawn("containerd", ["containerd", "--config", str(conf)], env=cfg.CONTAINERD_ENV)
        wait_until(lambda: self._check_alive("containerd") and self.ctr(
            "version", check=False).returncode == 0, timeout=60, what="containerd")

    def _import_own_images(self) -> None:
        have = self.image_refs()
        cache = self.bin_dir.parent / "images"
        cache.mkdir(exist_ok=True)
        specs = {
            "pause": ({"/pause": self.bin_dir / "pause"}, ["/pause"]),
            "coredns": ({"/coredns": self.bin_dir / "coredns"}, ["/coredns"]),
            "toolbox": ({"/bin/busybox": Path("/bin/busybox")}, ["/bin/busybox"]),
        }
        for name, (files, entrypoint) in specs.items():
            ref = self.images[name]
            if ref in have:
                continue
            archive = cache / f"{name}.tar"
            write_image(archive, ref, files, entrypoint=entrypoint)
            self.import_image(archive)

    def _start_kubelet(self) -> None:
        cert, key = self.cp.pki.sign_client_cert("kubelet", f"system:node:{cfg.NODE_NAME}", "system:nodes")
        kubeconfig = write_kubeconfig(self.run_dir / "kubelet.kubeconfig", self.cp.server, self.cp.ca_file, "kubelet",
                                      {"client-certificate": str(cert), "client-key": str(key)})
        conf = self.run_dir / "kubelet.json"
        conf.write_text(cfg.kubelet_config(self.run_dir, self.cp.ca_file))
        self._spawn("kubelet", [
            str(self.bin_dir / "kubelet"), f"--config={conf}", f"--kubeconfig={kubeconfig}",
            f"--hostname-override={cfg.NODE_NAME}", f"--node-ip={NODE_IP}",
            f"--root-dir={self.run_dir / 'kubelet'}", f"--cert-dir={self.run_dir / 'pki'}", "--v=1",
        ])

    def _start_kube_proxy(self) -> None:
        conf = self.run_dir / "kube-proxy.json"
        conf.write_text(cfg.kube_proxy_config(self.cp.kubeconfig))
        self._spawn("kube-proxy", [str(self.bin_dir / "kube-proxy"), f"--config={conf}", "--v=1"])

    def _start_scheduler(self) -> None:
        kc = self.cp.kubeconfig
        self._spawn("kube-scheduler", [
            str(self.bin_dir / "kube-scheduler"), f"--kubeconfig={kc}",
            f"--authentication-kubeconfig={kc}", f"--authorization-kubeconfig={kc}",
            "--leader-elect=false", "--bind-address=127.0.0.1", f"--secure-port={free_port()}",
            "--v=1",
        ])
