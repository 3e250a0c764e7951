"""Integration fixtures: Graft CRDs on the session control plane, and `graft operator` per test."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import pytest

from testbed.controlplane import ControlPlane
from testbed.operator import OperatorProcess
from tests.integration.helpers import REPO


@pytest.fixture(scope="session")
def graft_crds(control_plane: ControlPlane) -> ControlPlane:
    """The generated Graft CRDs installed; the controller manager restarted so its garbage
    collector knows the new kinds at once (owner references to FineTuneJobs)."""
    control_plane.install_crds([REPO / "charts" / "graft" / "crds" / "graft.dev.yaml"])
    control_plane.restart_controller_manager()
    return control_plane


@pytest.fixture
def operator(graft_crds: ControlPlane, namespace: str, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[OperatorProcess]:
    """`graft operator` watching the test's namespace (the log tail is printed if the test fails)."""
    op = OperatorProcess(graft_crds, namespace, tmp_path).start()
    yield op
    op.stop()
    rep = getattr(request.node, "rep_call", None)
    if rep is not None and rep.failed:
        print(f"--- operator log ({op.log_path}) ---\n{op.log_tail(120)}")


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> object:
    rep = yield
    if rep.when == "call":
        item.rep_call = rep  # type: ignore[attr-defined]
    return rep
