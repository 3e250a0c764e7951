"""A real, local Kubernetes control plane for integration tests.

etcd + kube-apiserver + kube-controller-manager, built from their Go modules by
``scripts/controlplane.sh`` (cached outside the repo) and run as local processes on
loopback ports. No kubelet, no scheduler: Pods stay Pending.

    cp = ControlPlane().start(crds=ControlPlane.kuberay_crd_paths())
    cp.kubectl("get", "ns")
    cp.stop()

Only the standard library, ``openssl`` and ``kubectl`` are used, so the module works
in any interpreter. The binaries and their knobs: :mod:`testbed.binaries`; also
``GRAFT_KEEP_CONTROLPLANE=1``: keep the temp dir (logs, certs, etcd data) after ``stop()``.
"""

from __future__ import annotations

import atexit
import functools
import json
import os
import shutil
import ssl
import subprocess
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Callable, Iterable, Sequence

from testbed.binaries import ControlPlaneError, ensure_binaries, find_kubectl
from testbed.pki import ClusterPki, write_kubeconfig
from testbed.ports import free_port, free_ports
from testbed.process import Process, ProcessError, wait_until

DEFAULT_CONTROLLERS: tuple[str, ...] = (
    "garbage-collector-controller",
    "namespace-controller",
    "serviceaccount-controller",
    "serviceaccount-token-controller",
    "root-ca-certificate-publisher-controller",
    "deployment-controller",
    "replicaset-controller",
    "statefulset-controller",
    "job-controller",
    "endpointslice-controller",
    # The API server's service proxy resolves Services through Endpoints, not EndpointSlices:
    # KubeRay out of cluster (-use-kubernetes-proxy) reads Ray job status through it.
    "endpoints-controller",
)
# Added when a node joins (testbed/kubenode.py): node lifecycle (removes the not-ready taint
# the kubelet registers with), volumes, pod GC, finished Jobs.
NODE_CONTROLLERS: tuple[str, ...] = (
    "node-lifecycle-controller",
    "persistentvolume-binder-controller",
    "persistentvolume-protection-controller",
    "persistentvolumeclaim-protection-controller",
    "pod-garbage-collector-controller",
    "ttl-after-finished-controller",
    "disruption-controller",
)


class ControlPlane:
    """etcd + kube-apiserver (+ kube-controller-manager) on loopback, RBAC enabled.

    Auth: an admin bearer token (group ``system:masters``) in a static token file; the
    serving certificate is signed by a throwaway CA (``ca_file``); ServiceAccount tokens
    are signed with a generated RSA key, so TokenRequest (``kubectl create token``) works.
    """

    def __init__(
        self,
        *,
        controllers: Sequence[str] = DEFAULT_CONTROLLERS,
        kubectl: str | None = None,
        startup_timeout: float = 90.0,
        extra_apiserver_args: Sequence[str] = (),
        extra_controller_manager_args: Sequence[str] = (),
        node_ip: str | None = None,
        detached: bool = False,
    ) -> None:
        """``node_ip``: make the API server reachable from pods of a node
        (testbed/kubenode.py): listen on all addresses, advertise ``node_ip`` as the
        ``kubernetes`` Service's endpoint, a kubelet client certificate, NodeRestriction
        and the node controllers. ``detached``: the processes outlive this Python process
        (scripts/cluster.sh up); stop them with :meth:`stop_pids`."""
        self.node_ip = node_ip
        self.detached = detached
        if node_ip:
            controllers = (*controllers, *NODE_CONTROLLERS)
        self.controllers = tuple(controllers)
        self.kubectl_bin = kubectl or find_kubectl()
        self.startup_timeout = startup_timeout
        self.extra_apiserver_args = tuple(extra_apiserver_args)
        self.extra_controller_manager_args = tuple(extra_controller_manager_args)
        self.workdir: Path | None = None
        self.bin_dir: Path | None = None
        self.admin_token = uuid.uuid4().hex
        self.etcd_port = 0
        self.port = 0
        self.kcm_port = 0
        self._procs: dict[str, Process] = {}
        self._ssl: ssl.SSLContext | None = None
        self.timings: dict[str, float] = {}  # startup phase -> seconds

    # ------------------------------------------------------------------ paths
    def _path(self, *parts: str) -> Path:
        if self.workdir is None:
            raise ControlPlaneError("control plane not started")
        return self.workdir.joinpath(*parts)

    @property
    def server(self) -> str:
        """API server URL, e.g. https://127.0.0.1:PORT."""
        return f"https://127.0.0.1:{self.port}"

    @property
    def kubeconfig(self) -> Path:
        """Admin kubeconfig (token in group system:masters)."""
        return self._path("admin.kubeconfig")

    @property
    def ca_file(self) -> Path:
        """CA that signed the API server's serving certificate."""
        return self.pki.ca_file

    @property
    def pki(self) -> ClusterPki:
        """The cluster's CA: signs client and serving certificates (the node's, webhooks')."""
        return ClusterPki(self._path("pki"))

    @staticmethod
    def kuberay_crd_paths() -> list[Path]:
        """The official KubeRay CRDs (RayCluster, RayJob, RayService), from the build cache."""
        crds = ensure_binaries()["crds"]
        paths = [crds / f"ray.io_{k}.yaml" for k in ("rayclusters", "rayjobs", "rayservices")]
        missing = [p for p in paths if not p.is_file()]
        if missing:
            raise ControlPlaneError(f"missing KubeRay CRDs: {missing}")
        return paths

    # -------------------------------------------------------------- lifecycle
    def start(self, crds: Iterable[str | os.PathLike] = ()) -> "ControlPlane":
        """Start etcd and kube-apiserver, install ``crds`` (before the controller manager,
        so its garbage collector discovers them at once), then kube-controller-manager.
        Returns self."""
        if self._procs:
            raise ControlPlaneError("already started")
        self.bin_dir = ensure_binaries()["bin"]
        self.workdir = Path(tempfile.mkdtemp(prefix="graft-cp-"))
        if not self.detached:
            atexit.register(self.stop)
        try:
            (self.workdir / "logs").mkdir()
            self._timed("pki", lambda: self.pki.create(self.admin_token, self.node_ip))
            self._timed("etcd", self._start_etcd)
            self._timed("kube-apiserver", self._start_apiserver)
            write_kubeconfig(self.kubeconfig, self.server, self.ca_file, "admin", {"token": self.admin_token})
            crds = list(crds)
            if crds:
                self._timed("crds", lambda: self.install_crds(crds))
            if self.controllers:
                self._timed("kube-controller-manager", self._start_controller_manager)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Stop all processes (SIGTERM to each process group, SIGKILL after 10 s) and
        remove the temp dir unless GRAFT_KEEP_CONTROLPLANE=1."""
        for name in ("kube-controller-manager", "kube-apiserver", "etcd"):
            self._stop_proc(name)
        if self.workdir and self.workdir.exists():
            if os.environ.get("GRAFT_KEEP_CONTROLPLANE") == "1":
                print(f"control plane files kept in {self.workdir}")
            else:
                shutil.rmtree(self.workdir, ignore_errors=True)
        self.workdir = None

    def __enter__(self) -> "ControlPlane":
        return self if self._procs else self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def restart_controller_manager(self) -> None:
        """Restart kube-controller-manager (e.g. after installing CRDs late, so the
        garbage collector sees them without waiting for its 30 s rediscovery)."""
        self._stop_proc("kube-controller-manager")
        self._start_controller_manager()

    def log_tail(self, name: str, lines: int = 40) -> str:
        """Last ``lines`` lines of a component's log ('etcd', 'kube-apiserver', ...)."""
        proc = self._procs.get(name)
        return proc.tail(lines) if proc else f"(no log for {name})"

    # ---------------------------------------------------------------- helpers
    def kubectl(
        self,
        *args: str,
        input: str | None = None,
        check: bool = True,
        timeout: float = 120.0,
        kubeconfig: str | os.PathLike | None = None,
    ) -> subprocess.CompletedProcess:
        """Run kubectl against this cluster (admin unless ``kubeconfig`` is given).
        Returns the CompletedProcess (text stdout/stderr); raises ControlPlaneError on a
        non-zero exit when ``check``."""
        env = dict(os.environ)
        env["KUBECONFIG"] = str(kubeconfig or self.kubeconfig)
        env["KUBECACHEDIR"] = str(self._path("kubectl-cache"))
        cmd = [self.kubectl_bin, *args]
        proc = subprocess.run(
            cmd, input=input, capture_output=True, text=True, timeout=timeout, env=env
        )
        if check and proc.returncode != 0:
            raise ControlPlaneError(
                f"{' '.join(cmd)} failed (rc={proc.returncode}):\n{proc.stderr or proc.stdout}"
            )
        return proc

    def kubectl_json(self, *args: str, **kw) -> dict:
        """``kubectl ... -o json`` parsed."""
        return json.loads(self.kubectl(*args, "-o", "json", **kw).stdout)

    def api_get(self, path: str, token: str | None = None) -> dict:
        """GET a raw API path (e.g. '/version') as admin (or with ``token``)."""
        req = urllib.request.Request(
            self.server + path, headers={"Authorization": f"Bearer {token or self.admin_token}"}
        )
        with urllib.request.urlopen(req, context=self._ssl_context(), timeout=10) as resp:
            return json.loads(resp.read())

    def version(self) -> dict:
        """The server's /version document."""
        return self.api_get("/version")

    def install_crds(self, paths: Iterable[str | os.PathLike], timeout: float = 120.0) -> list[str]:
        """Install CRD files and wait until each is Established and served. Uses
        ``kubectl create`` (fast; the KubeRay CRDs are ~1 MB, too big for client-side
        apply) and server-side apply for CRDs that already exist, so it is idempotent.
        Returns the CRD names."""
        names: list[str] = []
        for p in paths:
            proc = self.kubectl("create", "-o", "name", "-f", str(p), check=False, timeout=timeout)
            if proc.returncode != 0:
                if "AlreadyExists" not in proc.stderr:
                    raise ControlPlaneError(f"kubectl create -f {p} failed:\n{proc.stderr}")
                proc = self.kubectl(
                    "apply", "--server-side", "--force-conflicts", "--field-manager=graft-tests",
                    "-o", "name", "-f", str(p), timeout=timeout,
                )
            names += [ln.split("/", 1)[1] for ln in proc.stdout.split()
                      if ln.startswith("customresourcedefinition")]
        self.wait_for_crds(names, timeout=timeout)
        return names

    def wait_for_crds(self, names: Iterable[str], timeout: float = 120.0) -> None:
        """Wait until the CRDs (e.g. 'rayjobs.ray.io') are Established and their
        resources answer a list request."""
        names = list(names)
        if not names:
            return
        # Polled through the API: `kubectl wait` errors out while .status.conditions is
        # still empty right after creation.
        def established(n: str) -> dict:
            crd = self.api_get(f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{n}")
            conds = (crd.get("status") or {}).get("conditions") or []
            ok = any(c["type"] == "Established" and c["status"] == "True" for c in conds)
            return crd if ok else {}

        for n in names:
            crd = wait_until(functools.partial(established, n), timeout=timeout, interval=0.5,
                             what=f"CRD {n} to be Established")
            spec = crd["spec"]
            version = next(v["name"] for v in spec["versions"] if v.get("served"))
            path = f"/apis/{spec['group']}/{version}/{spec['names']['plural']}?limit=1"
            wait_until(functools.partial(self.api_get, path), timeout=timeout, interval=0.5,
                       what=f"{n} to be served")

    def create_namespace(self, prefix: str = "graft-test", wait_default_sa: bool = True) -> str:
        """Create a namespace with a unique name; by default wait for its 'default'
        ServiceAccount (Pods are refused before it exists). Returns the name."""
        name = f"{prefix}-{uuid.uuid4().hex[:8]}"
        self.kubectl("create", "namespace", name)
        if wait_default_sa and "serviceaccount-controller" in self.controllers and self._procs.get(
            "kube-controller-manager"
        ):
            wait_until(
                lambda: self.api_get(f"/api/v1/namespaces/{name}/serviceaccounts/default"),
                timeout=60, what=f"default ServiceAccount in {name}",
            )
        return name

    def delete_namespace(self, name: str, wait: bool = False, timeout: float = 120.0) -> None:
        """Delete a namespace; with ``wait`` block until the namespace controller has
        finalized it."""
        self.kubectl(
            "delete", "namespace", name, "--ignore-not-found", f"--wait={str(wait).lower()}",
            f"--timeout={int(timeout)}s", timeout=timeout + 10,
        )

    def create_service_account(self, namespace: str, name: str) -> None:
        """Create a ServiceAccount (no error if it exists)."""
        p = self.kubectl("create", "serviceaccount", name, "-n", namespace, check=False)
        if p.returncode != 0 and "AlreadyExists" not in p.stderr:
            raise ControlPlaneError(p.stderr)

    def sa_token(
        self, namespace: str, name: str, *, duration: str = "1h", create: bool = True
    ) -> str:
        """A TokenRequest token for ServiceAccount ``namespace/name`` (created first if
        ``create``), as ``kubectl create token`` returns it."""
        if create:
            self.create_service_account(namespace, name)
        return self.kubectl(
            "create", "token", name, "-n", namespace, f"--duration={duration}"
        ).stdout.strip()

    def token_kubeconfig(
        self,
        token: str,
        path: str | os.PathLike | None = None,
        *,
        user: str = "token-user",
        namespace: str | None = None,
    ) -> Path:
        """Write a kubeconfig that authenticates with ``token`` (e.g. a ServiceAccount's)
        to ``path`` (default: a new file in the temp dir). Returns the path."""
        path = Path(path) if path else self._path(f"{user}-{uuid.uuid4().hex[:6]}.kubeconfig")
        return write_kubeconfig(path, self.server, self.ca_file, user, {"token": token}, namespace)

    # --------------------------------------------------------------- internals
    def _timed(self, phase: str, fn: Callable[[], object]) -> None:
        t0 = time.monotonic()
        fn()
        self.timings[phase] = round(time.monotonic() - t0, 2)

    def _ssl_context(self) -> ssl.SSLContext:
        if self._ssl is None:
            self._ssl = ssl.create_default_context(cafile=str(self.ca_file))
        return self._ssl

    def pids(self) -> dict[str, int]:
        """PIDs of the running components (for a detached control plane's state file)."""
        return {n: p.pid for n, p in self._procs.items() if p.running()}

    @staticmethod
    def stop_pids(pids: dict[str, int], workdir: str | None) -> None:
        """Stop a detached control plane from another process: SIGTERM the process group
        of each PID whose command line still names its component, then remove ``workdir``."""
        from testbed.nodehost import stop_pid  # local: nodehost is only needed here

        for name in ("kube-controller-manager", "kube-apiserver", "etcd"):
            if name in pids:
                stop_pid(pids[name], name)
        if workdir and os.environ.get("GRAFT_KEEP_CONTROLPLANE") != "1":
            shutil.rmtree(workdir, ignore_errors=True)

    def _spawn(self, name: str, args: list[str]) -> Process:
        """Start a component in its own process group; it dies with this process unless detached."""
        assert self.bin_dir is not None, "start() sets the bin dir"
        proc = Process(name, [str(self.bin_dir / name), *args], self._path("logs", f"{name}.log"),
                       die_with_parent=not self.detached).start()
        self._procs[name] = proc
        return proc

    def _stop_proc(self, name: str) -> None:
        """SIGTERM the component's process group, SIGKILL after 10 s."""
        proc = self._procs.pop(name, None)
        if proc is not None:
            proc.stop(timeout=10)

    def _wait_ready(self, name: str, probe: Callable[[], bool], timeout: float) -> None:
        try:
            self._procs[name].wait_ready(probe, timeout)
        except ControlPlaneError:
            raise
        except ProcessError as exc:  # the same message, as the control plane's error
            raise ControlPlaneError(str(exc)) from None

    def _start_etcd(self) -> None:
        self.etcd_port, peer = free_ports(2)
        client = f"http://127.0.0.1:{self.etcd_port}"
        self._spawn("etcd", [
            "--name=graft-test",
            f"--data-dir={self._path('etcd')}",
            f"--listen-client-urls={client}",
            f"--advertise-client-urls={client}",
            f"--listen-peer-urls=http://127.0.0.1:{peer}",
            f"--initial-advertise-peer-urls=http://127.0.0.1:{peer}",
            f"--initial-cluster=graft-test=http://127.0.0.1:{peer}",
            "--unsafe-no-fsync",
            "--log-level=warn",
        ])

        def healthy() -> bool:
            with urllib.request.urlopen(client + "/health", timeout=2) as r:
                return json.loads(r.read()).get("health") == "true"

        self._wait_ready("etcd", healthy, self.startup_timeout)

    def _start_apiserver(self) -> None:
        self.port = free_port()
        pki = self._path("pki")
        self._spawn("kube-apiserver", [
            f"--etcd-servers=http://127.0.0.1:{self.etcd_port}",
            *self._listen_args(),
            f"--secure-port={self.port}",
            f"--cert-dir={self._path('certs')}",
            f"--tls-cert-file={pki / 'apiserver.crt'}",
            f"--tls-private-key-file={pki / 'apiserver.key'}",
            f"--client-ca-file={pki / 'ca.crt'}",
            f"--token-auth-file={pki / 'tokens.csv'}",
            "--authorization-mode=Node,RBAC",
            f"--service-account-issuer=https://127.0.0.1:{self.port}",
            f"--service-account-key-file={pki / 'sa.pub'}",
            f"--service-account-signing-key-file={pki / 'sa.key'}",
            "--service-cluster-ip-range=10.0.0.0/24",
            "--allow-privileged=true",
            "--profiling=false",
            "--v=1",
            *self.extra_apiserver_args,
        ])
        self._ssl = None

        def ready() -> bool:
            req = urllib.request.Request(
                self.server + "/readyz", headers={"Authorization": f"Bearer {self.admin_token}"}
            )
            with urllib.request.urlopen(req, context=self._ssl_context(), timeout=5) as r:
                return r.status == 200

        self._wait_ready("kube-apiserver", ready, self.startup_timeout)

    def _listen_args(self) -> list[str]:
        if not self.node_ip:
            return ["--bind-address=127.0.0.1", "--advertise-address=127.0.0.1"]
        pki = self._path("pki")
        return [
            "--bind-address=0.0.0.0",  # pods reach it on the node IP (kubernetes Service)
            f"--advertise-address={self.node_ip}",
            f"--kubelet-client-certificate={pki / 'kubelet-client.crt'}",
            f"--kubelet-client-key={pki / 'kubelet-client.key'}",
            "--kubelet-preferred-address-types=InternalIP",
            "--enable-admission-plugins=NodeRestriction",
        ]

    def _start_controller_manager(self) -> None:
        self.kcm_port = free_port()
        pki = self._path("pki")
        self._spawn("kube-controller-manager", [
            f"--kubeconfig={self.kubeconfig}",
            f"--authentication-kubeconfig={self.kubeconfig}",
            f"--authorization-kubeconfig={self.kubeconfig}",
            "--leader-elect=false",
            "--bind-address=127.0.0.1",
            f"--secure-port={self.kcm_port}",
            f"--cert-dir={self._path('kcm-certs')}",
            f"--controllers={','.join(self.controllers)}",
            "--use-service-account-credentials=false",
            f"--service-account-private-key-file={pki / 'sa.key'}",
            f"--root-ca-file={pki / 'ca.crt'}",
            "--cluster-name=graft-test",
            "--v=1",
            *self.extra_controller_manager_args,
        ])
        insecure = ssl.create_default_context()
        insecure.check_hostname = False
        insecure.verify_mode = ssl.CERT_NONE

        def healthy() -> bool:
            url = f"https://127.0.0.1:{self.kcm_port}/healthz"
            with urllib.request.urlopen(url, context=insecure, timeout=5) as r:
                return r.status == 200

        self._wait_ready("kube-controller-manager", healthy, self.startup_timeout)
