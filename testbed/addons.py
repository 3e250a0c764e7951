"""The real KubeRay operator and Kueue, run out of cluster against a testbed/controlplane.py
control plane (binaries from scripts/controlplane.sh; see docs/testing-control-plane.md).

* :class:`KubeRayOperator`: ``ray-operator`` v1.6.0 with the admin kubeconfig, leader
  election off, loopback ports, ``-use-kubernetes-proxy`` (it reaches each Ray head's
  dashboard through the API server's service proxy: the host cannot resolve
  ``*.svc.cluster.local``).
* :class:`Kueue`: ``kueue`` v0.17.0 with its CRDs, a config that enables the
  ``ray.io/rayjob`` integration, and its webhooks served on 127.0.0.1 with a certificate
  signed by the cluster CA; the webhook configurations point at that URL and are removed
  again by :meth:`Kueue.stop` (a dead webhook would block every RayJob).
"""

from __future__ import annotations

import base64
import json
import os
import shlex
import shutil
import ssl
import urllib.request
from pathlib import Path

import yaml

from testbed.controlplane import ControlPlane, ControlPlaneError
from testbed.ports import free_ports
from testbed.process import Process, ProcessError, wait_until

KUEUE_NAMESPACE = "kueue-system"
# Kueue's webhooks we install: its own API and the RayJob integration. The others in its
# manifest (Pods, Deployments, batch Jobs, ...) would intercept objects of every test.
KUEUE_WEBHOOK_RESOURCES = {"clusterqueues", "localqueues", "resourceflavors", "workloads",
                           "cohorts", "rayjobs"}


def _start(name: str, argv: list[str], cp: ControlPlane, ready_url: str, timeout: float) -> Process:
    """Start an add-on with the admin kubeconfig (its own process group, dies with this process)
    and wait until ``ready_url`` answers 200."""
    proc = Process(name, argv, cp._path("logs", f"{name}.log"), env={**os.environ, "KUBECONFIG": str(cp.kubeconfig)},
                   die_with_parent=True).start()
    ctx = ssl.create_default_context()
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE

    def ok() -> bool:
        with urllib.request.urlopen(ready_url, timeout=3, context=ctx) as r:
            return r.status == 200

    try:
        proc.wait_ready(ok, timeout, interval=0.5, what=f"ready at {ready_url}")
    except ProcessError as exc:
        proc.stop()
        raise ControlPlaneError(str(exc)) from None
    return proc


class KubeRayOperator:
    def __init__(self, cp: ControlPlane, bin_dir: Path, *, extra_args: tuple[str, ...] = ()) -> None:
        self.cp = cp
        self.binary = bin_dir / "kuberay-operator"
        self.extra_args = extra_args
        self.process: Process | None = None

    def start(self, timeout: float = 120.0) -> "KubeRayOperator":
        probe, metrics = free_ports(2)
        self.process = _start("kuberay-operator", [
            str(self.binary),
            "-enable-leader-election=false",
            f"-metrics-addr=127.0.0.1:{metrics}",
            f"-health-probe-bind-address=127.0.0.1:{probe}",
            "-use-kubernetes-proxy",
            "-log-stdout-encoder=console",
            *self.extra_args,
        ], self.cp, f"http://127.0.0.1:{probe}/readyz", timeout)
        return self

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()

    def log_tail(self, lines: int = 40) -> str:
        return self.process.tail(lines) if self.process is not None else "(not started)"


class Kueue:
    def __init__(self, cp: ControlPlane, bin_dir: Path, manifests: Path) -> None:
        self.cp = cp
        self.binary = bin_dir / "kueue"
        self.manifests = manifests
        self.workdir = cp._path("kueue")
        self.process: Process | None = None
        self.webhook_port = 0
        self.webhook_configs: list[tuple[str, str]] = []  # (kind, name) installed by us

    def start(self, timeout: float = 180.0) -> "Kueue":
        self.cp.install_crds(sorted((self.manifests / "crds").glob("*.yaml")))
        if self.cp.kubectl("get", "namespace", KUEUE_NAMESPACE, check=False).returncode != 0:
            self.cp.kubectl("create", "namespace", KUEUE_NAMESPACE)
        certs = self.workdir / "certs"
        certs.mkdir(parents=True, exist_ok=True)
        crt, key = self.cp.pki.sign_serving_cert("kueue-webhook")
        (certs / "tls.crt").write_bytes(crt.read_bytes())
        (certs / "tls.key").write_bytes(key.read_bytes())
        self.webhook_port, health, metrics = free_ports(3)
        config = self.workdir / "config.yaml"
        config.write_text(json.dumps({
            "apiVersion": "config.kueue.x-k8s.io/v1beta2",
            "kind": "Configuration",
            "namespace": KUEUE_NAMESPACE,
            "manageJobsWithoutQueueName": False,
            "internalCertManagement": {"enable": False},
            "webhook": {"host": "127.0.0.1", "port": self.webhook_port, "certDir": str(certs)},
            "health": {"healthProbeBindAddress": f"127.0.0.1:{health}"},
            "metrics": {"bindAddress": f"127.0.0.1:{metrics}"},
            "leaderElection": {"leaderElect": False},
            "integrations": {"frameworks": ["ray.io/rayjob"]},
            "featureGates": {"VisibilityOnDemand": False},
        }, indent=2))
        # Without internal cert management Kueue reads its metrics certificate from the fixed
        # /etc/kueue/metrics/certs: give it that path in a private mount namespace (an overlay
        # on /etc that only this process sees), not on the host.
        upper, work = self.workdir / "etc-upper", self.workdir / "etc-work"
        (upper / "kueue" / "metrics").mkdir(parents=True, exist_ok=True)
        work.mkdir(exist_ok=True)
        shutil.copytree(certs, upper / "kueue" / "metrics" / "certs", dirs_exist_ok=True)
        script = (f"mount -t overlay graft-kueue-etc -o lowerdir=/etc,upperdir={shlex.quote(str(upper))},"
                  f"workdir={shlex.quote(str(work))} /etc && exec {shlex.quote(str(self.binary))} "
                  f"--config={shlex.quote(str(config))} --zap-log-level=info")
        self.process = _start("kueue", ["unshare", "--mount", "--propagation", "private", "sh", "-c", script],
                              self.cp, f"http://127.0.0.1:{health}/readyz", timeout)
        self._install_webhooks()
        # Webhooks answer: a server-side dry-run goes through Kueue's defaulting webhook.
        flavor = {"apiVersion": "kueue.x-k8s.io/v1beta2", "kind": "ResourceFlavor",
                  "metadata": {"name": "graft-webhook-probe"}}
        wait_until(lambda: self.cp.kubectl("create", "--dry-run=server", "-f", "-",
                                           input=json.dumps(flavor), check=False).returncode == 0,
                   timeout=60, interval=0.5, what="Kueue webhooks")
        return self

    def stop(self) -> None:
        for kind, name in self.webhook_configs:
            self.cp.kubectl("delete", kind, name, "--ignore-not-found", check=False)
        self.webhook_configs = []
        if self.process is not None:
            self.process.stop()

    def log_tail(self, lines: int = 40) -> str:
        return self.process.tail(lines) if self.process is not None else "(not started)"

    def _install_webhooks(self) -> None:
        ca = base64.b64encode(self.cp.ca_file.read_bytes()).decode()
        docs = [d for d in yaml.safe_load_all((self.manifests / "webhooks.yaml").read_text()) if d]
        for doc in docs:
            doc["metadata"]["name"] = "kueue-" + doc["metadata"]["name"]
            hooks = [h for h in doc["webhooks"]
                     if KUEUE_WEBHOOK_RESOURCES & {r for rule in h["rules"] for r in rule["resources"]}]
            for h in hooks:
                path = h["clientConfig"]["service"]["path"]
                h["clientConfig"] = {"url": f"https://127.0.0.1:{self.webhook_port}{path}",
                                     "caBundle": ca}
            doc["webhooks"] = hooks
            self.cp.kubectl("apply", "--server-side", "--force-conflicts",
                            "--field-manager=graft-tests", "-f", "-", input=json.dumps(doc))
            self.webhook_configs.append((doc["kind"].lower(), doc["metadata"]["name"]))
