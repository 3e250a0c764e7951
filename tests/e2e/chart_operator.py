"""`graft operator` as deployed by the chart, for the e2e tests on a shared Ray cluster."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.controlplane import ControlPlane, free_port
from tests.integration.helpers import REPO, OperatorProcess, wait_for


class ChartOperator(OperatorProcess):
    """`graft operator` authenticated as the chart's ServiceAccount (least privilege, as deployed),
    watching the given namespaces."""

    def __init__(self, cp: ControlPlane, namespaces: list[str], log_dir: Path, kubeconfig: Path, *extra: str) -> None:
        super().__init__(cp, namespaces[0], log_dir, *extra)
        self.namespaces, self.kubeconfig = namespaces, kubeconfig

    def start(self, timeout: float = 90.0) -> "ChartOperator":
        self.starts += 1
        self.port = free_port()
        scope = [a for ns in self.namespaces for a in ("--namespace", ns)]
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "graft", "operator", "--kubeconfig", str(self.kubeconfig), *scope,
                 "--resync-seconds", "5", "--liveness", f"http://127.0.0.1:{self.port}/healthz", *self.extra],
                stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"}, cwd=REPO,
                start_new_session=True,
            )
        wait_for(self._alive, timeout=timeout, what=f"the operator's liveness probe; log:\n{self.log_tail()}")
        return self
