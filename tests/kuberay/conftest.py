"""Fixtures for tests on the real one-node cluster (marker ``kuberay``).

* ``kube_node``: session scope. The machine-wide node lock, then a kubelet + containerd +
  kube-proxy + kube-scheduler + CoreDNS node joined to the session's ``control_plane``
  (tests/kubenode.py). Torn down at the end, leaving nothing on the host.
* ``node_namespace``: a fresh namespace per test, deleted afterwards (its pods stopped).
* ``kuberay_operator``: session scope, the real KubeRay operator (tests/addons.py).
* ``kueue``: session scope, real Kueue with webhooks and the RayJob integration.
"""

from __future__ import annotations

from typing import Iterator

import pytest

from tests.addons import KubeRayOperator, Kueue
from tests.cluster import node_lock, running_cluster
from tests.controlplane import ADDON_COMPONENTS, NODE_COMPONENTS, ControlPlane, ensure_binaries
from tests.kubenode import KubeNode


@pytest.fixture(scope="session")
def kube_node(control_plane: ControlPlane) -> Iterator[KubeNode]:
    """A Ready node with pod networking, Services and cluster DNS (see
    docs/testing-control-plane.md). ``node.import_image(archive, ref)`` loads an image."""
    bins = ensure_binaries(NODE_COMPONENTS)
    with node_lock():
        if running_cluster():
            pytest.fail("a cluster from scripts/cluster.sh up owns the node: run scripts/cluster.sh down")
        node = KubeNode(control_plane, bins["bin"]).start()
        try:
            yield node
        finally:
            left = node.stop()
            assert not left, f"the node teardown left things behind: {left}"


@pytest.fixture
def node_namespace(control_plane: ControlPlane, kube_node: KubeNode) -> Iterator[str]:
    """A fresh namespace on the node's cluster; deleted (and waited for) afterwards."""
    ns = control_plane.create_namespace(prefix="graft-node")
    yield ns
    control_plane.delete_namespace(ns, wait=True, timeout=120)


@pytest.fixture(scope="session")
def kuberay_operator(control_plane: ControlPlane, kube_node: KubeNode) -> Iterator[KubeRayOperator]:
    """The real KubeRay operator (v1.5.0, built from its Go module), out of cluster,
    watching every namespace of the node's cluster."""
    op = KubeRayOperator(control_plane, ensure_binaries(ADDON_COMPONENTS)["bin"]).start()
    try:
        yield op
    finally:
        op.stop()


@pytest.fixture(scope="session")
def kueue(control_plane: ControlPlane, kube_node: KubeNode) -> Iterator[Kueue]:
    """Real Kueue (v0.17.0) with its CRDs and webhooks, the ray.io/rayjob integration on."""
    bins = ensure_binaries(ADDON_COMPONENTS)
    k = Kueue(control_plane, bins["bin"], bins["kueue"]).start()
    try:
        yield k
    finally:
        k.stop()
