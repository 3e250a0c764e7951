"""`graft operator` as deployed by the chart, for the e2e tests on a shared Ray cluster."""

from __future__ import annotations

import sys
from pathlib import Path

from testbed.controlplane import ControlPlane
from testbed.operator import OperatorProcess, open_tenancy
from testbed.ray_head import RAY_ENV, RayHead
from tests.integration.rbac import operator_kubeconfig


class ChartOperator(OperatorProcess):
    """`graft operator` authenticated as the chart's ServiceAccount (least privilege, as deployed),
    watching the given namespaces."""

    def __init__(self, cp: ControlPlane, namespaces: list[str], log_dir: Path, kubeconfig: Path, *extra: str) -> None:
        super().__init__(cp, namespaces[0], log_dir, *extra)
        self.namespaces, self.kubeconfig = namespaces, kubeconfig

    def argv(self) -> list[str]:
        scope = [a for ns in self.namespaces for a in ("--namespace", ns)]
        return [sys.executable, "-m", "graft", "operator", "--kubeconfig", str(self.kubeconfig), *scope,
                "--resync-seconds", "5", "--liveness", f"http://127.0.0.1:{self.port}/healthz",
                *open_tenancy(self.extra), *self.extra]


def on_shared_head(cp: ControlPlane, namespaces: list[str], tmp: Path, head: RayHead,
                   platform_env: dict[str, str] | None = None) -> ChartOperator:
    """The operator (not started) as the shared-cluster e2e tests run it against a loopback Ray head.

    The loopback head is no Service in the tenants' namespaces: the operator allows it explicitly, and
    sets the Ray/HF environment itself (tenants may not: docs/tenancy.md); `platform_env` adds to
    that job environment (an object store's AWS_* variables, as a platform team would set them)."""
    env = {**RAY_ENV, "RAY_ADDRESS": head.gcs_address, **(platform_env or {})}
    job_env = [a for key, value in env.items() for a in ("--job-env", f"{key}={value}")]
    return ChartOperator(cp, namespaces, tmp, operator_kubeconfig(cp, tmp), "--serve-port", str(head.serve_port),
                         "--shared-poll-seconds", "1", "--allow-cluster-address", "http://127.0.0.1:*", *job_env)
