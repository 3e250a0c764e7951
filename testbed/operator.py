"""`graft operator` as a subprocess (the real entry point) against a testbed control plane, with
its liveness probe: the integration tests' per-test operator and bench/operator_scale.py's."""

from __future__ import annotations

import os
import sys
import urllib.request
from pathlib import Path

from testbed.binaries import REPO_ROOT
from testbed.controlplane import ControlPlane
from testbed.ports import free_port
from testbed.process import Process


def open_tenancy(extra: tuple[str, ...]) -> tuple[str, ...]:
    """`--no-require-policy` unless the test chose (the operator refuses namespaces no FineTunePolicy
    selects by default; most tests run without policies, as a single-team cluster would)."""
    return () if {"--require-policy", "--no-require-policy"} & set(extra) else ("--no-require-policy",)


class OperatorProcess:
    """`graft operator`, namespace-scoped, with a liveness probe; each start writes a new log
    (``operator-<n>.log`` in ``log_dir``)."""

    def __init__(self, cp: ControlPlane, namespace: str, log_dir: Path, *extra: str) -> None:
        self.cp, self.namespace, self.log_dir, self.extra = cp, namespace, log_dir, extra
        self.process: Process | None = None
        self.starts = 0
        self.port = 0

    @property
    def log_path(self) -> Path:
        return self.log_dir / f"operator-{self.starts}.log"

    @property
    def pid(self) -> int:
        assert self.process is not None, "not started"
        return self.process.pid

    def argv(self) -> list[str]:
        """The command line (after the liveness port is chosen)."""
        return [sys.executable, "-m", "graft", "operator", "--kubeconfig", str(self.cp.kubeconfig),
                "--namespace", self.namespace, "--resync-seconds", "2", "--ray-image", "example.org/graft-ray:test",
                # Storage every Ray pod reaches (a PVC mounted at the test's directory), read by the operator too;
                # the root is the mount itself, as the chart sets it (a namespace's pods mount <root>/<namespace>).
                "--storage-pvc", "graft-test", "--storage-mount-path", str(self.log_dir),
                "--result-storage", str(self.log_dir),
                "--liveness", f"http://127.0.0.1:{self.port}/healthz", *open_tenancy(self.extra), *self.extra]

    def start(self, timeout: float = 90.0) -> OperatorProcess:
        self.starts += 1
        self.port = free_port()
        self.process = Process("graft operator", self.argv(), self.log_path, env={**os.environ, "PYTHONUNBUFFERED": "1"},
                               cwd=REPO_ROOT, log_mode="wb").start()
        self.process.wait_ready(self._healthy, timeout, what="answering its liveness probe")  # exits or times out: ProcessError, log tail
        return self

    def _healthy(self) -> bool:
        """wait_ready's probe (its errors count as "not yet")."""
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/healthz", timeout=2) as r:
            return r.status == 200

    def stop(self) -> None:
        """SIGTERM, SIGKILL after 20 s (to the operator only, as a pod's container runtime would)."""
        if self.process is not None:
            self.process.stop(timeout=20, group=False)

    def kill(self) -> None:
        """SIGKILL: an abrupt crash, no graceful shutdown."""
        if self.process is not None and self.process.running():
            self.process.kill(group=False)

    def log_tail(self, lines: int = 60) -> str:
        return self.process.tail(lines) if self.process is not None else "(no log)"
