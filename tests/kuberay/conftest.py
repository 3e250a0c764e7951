"""Fixtures for tests on the real one-node cluster (marker ``kuberay``).

* ``kube_node``: session scope. The machine-wide node lock, then a kubelet + containerd +
  kube-proxy + kube-scheduler + CoreDNS node joined to the session's ``control_plane``
  (testbed/kubenode.py). Torn down at the end, leaving nothing on the host.
* ``node_namespace``: a fresh namespace per test, deleted afterwards (its pods stopped).
* ``kuberay_operator``: session scope, the real KubeRay operator (testbed/addons.py).
* ``kueue``: session scope, real Kueue with webhooks and the RayJob integration.
* ``ray_image``: session scope, the Ray image (graft + Ray) built by scripts/images.sh
  and loaded into the node's containerd; its reference.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Iterator

import pytest

from testbed.addons import KubeRayOperator, Kueue
from testbed.binaries import KUBERAY_COMPONENTS, KUEUE_COMPONENTS, NODE_COMPONENTS, ensure_binaries
from testbed.cluster import node_lock, running_cluster
from testbed.controlplane import ControlPlane
from testbed.kubenode import KubeNode


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
    """The real KubeRay operator (v1.6.0, built from its Go module), out of cluster,
    watching every namespace of the node's cluster."""
    op = KubeRayOperator(control_plane, ensure_binaries(KUBERAY_COMPONENTS)["bin"]).start()
    try:
        yield op
    finally:
        op.stop()


@pytest.fixture(scope="session")
def kueue(control_plane: ControlPlane, kube_node: KubeNode) -> Iterator[Kueue]:
    """Real Kueue (v0.17.0) with its CRDs and webhooks, the ray.io/rayjob integration on."""
    bins = ensure_binaries(KUEUE_COMPONENTS)
    k = Kueue(control_plane, bins["bin"], bins["kueue"]).start()
    try:
        yield k
    finally:
        k.stop()


@pytest.fixture(scope="session")
def ray_image(kube_node: KubeNode) -> str:
    """The Ray image of this checkout (scripts/images.sh: cached layers, loaded once into the
    node's persistent containerd; cold: see docs/testing-control-plane.md). Its reference."""
    script = Path(__file__).resolve().parents[2] / "scripts" / "images.sh"
    env = {**os.environ, "CONTAINERD_ADDRESS": str(kube_node.socket)}
    subprocess.run(["bash", str(script), "load", "ray"], env=env, check=True, timeout=3000)
    ref = subprocess.run(["bash", str(script), "refs"], capture_output=True, text=True, check=True).stdout.split()[0]
    assert ref in kube_node.image_refs(), f"{ref} not in the node's containerd after scripts/images.sh load ray"
    return ref
