"""Shared pytest fixtures."""

from __future__ import annotations

from typing import Iterator

import pytest

from tests.controlplane import ControlPlane


@pytest.fixture(scope="session")
def control_plane() -> Iterator[ControlPlane]:
    """A real etcd + kube-apiserver + kube-controller-manager for the whole session,
    with the official KubeRay CRDs installed (see docs/testing-control-plane.md)."""
    cp = ControlPlane()
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
