"""Shared pytest fixtures."""

from __future__ import annotations

import os
import uuid
from typing import Iterator

import pytest

from testbed.controlplane import ControlPlane
from testbed.nodehost import NODE_IP
from testbed.s3server import S3Server

NODE_FIXTURE = "kube_node"  # tests/kuberay/conftest.py: the real one-node cluster


def _session_needs_node(session: pytest.Session) -> bool:
    return any(NODE_FIXTURE in getattr(item, "fixturenames", ()) for item in session.items)


@pytest.fixture(scope="session")
def control_plane(request: pytest.FixtureRequest) -> Iterator[ControlPlane]:
    """A real etcd + kube-apiserver + kube-controller-manager for the whole session,
    with the official KubeRay CRDs installed (see docs/testing-control-plane.md).
    When the session has ``kuberay`` tests, the same control plane is made ready for
    the node they run on (``node_ip``: reachable from pods)."""
    cp = ControlPlane(node_ip=NODE_IP if _session_needs_node(request.session) else None)
    cp.start(crds=ControlPlane.kuberay_crd_paths())
    try:
        yield cp
    finally:
        cp.stop()


@pytest.fixture
def namespace(control_plane: ControlPlane) -> Iterator[str]:
    """A fresh namespace per test, deleted (without waiting) afterwards."""
    ns = control_plane.create_namespace()
    yield ns
    control_plane.delete_namespace(ns, wait=False)


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    """A real S3-compatible server (versitygw) on a loopback port for the whole session."""
    with S3Server() as server:
        yield server


@pytest.fixture
def s3_bucket(s3_server: S3Server, monkeypatch: pytest.MonkeyPatch) -> str:
    """A fresh bucket per test (`s3://...`), with the server's AWS_* variables set in the environment."""
    for key, value in s3_server.env.items():
        monkeypatch.setenv(key, value)
    return s3_server.create_bucket(f"t-{uuid.uuid4().hex[:12]}")


LAYERS = ("unit", "integration", "e2e")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Every test belongs to exactly one layer; the run goes fast to slow: unit, integration, e2e.
    A test runs on the real node (fixture ``kube_node``) exactly when it is marked ``kuberay``, and a
    ``chaos`` test is also ``slow`` (the full tier: make test-all)."""
    unmarked = [item.nodeid for item in items if sum(item.get_closest_marker(m) is not None for m in LAYERS) != 1]
    if unmarked:
        raise pytest.UsageError(f"tests need exactly one of the markers {', '.join(LAYERS)}: {', '.join(unmarked[:10])}")
    mismatched = [item.nodeid for item in items
                  if (item.get_closest_marker("kuberay") is not None)
                  != (NODE_FIXTURE in getattr(item, "fixturenames", ()))]
    if mismatched:
        raise pytest.UsageError(f"tests on the real node (fixture {NODE_FIXTURE}) and only they are "
                                f"marked kuberay: {', '.join(mismatched[:10])}")
    fast_chaos = [item.nodeid for item in items if item.get_closest_marker("chaos") and not item.get_closest_marker("slow")]
    if fast_chaos:
        raise pytest.UsageError(f"chaos tests run in the full tier only: mark them slow too: {', '.join(fast_chaos[:10])}")

    def layer(item: pytest.Item) -> int:
        return next(i for i, m in enumerate(LAYERS) if item.get_closest_marker(m) is not None)

    items.sort(key=layer)  # stable: keeps file order within a layer


@pytest.fixture(autouse=True)
def _umask_left_as_found() -> Iterator[None]:
    """Each test leaves the process umask as it found it: `graft.jobs` and `graft run`, called in
    process, set the storage umask (0007) for the rest of their process, and files this process
    writes later (PKI, manifests, node directories) must not depend on which tests ran first."""
    found = os.umask(0)
    os.umask(found)
    yield
    os.umask(found)
