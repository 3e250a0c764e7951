"""Pod failures KubeRay does not report (an image that cannot be pulled, an OOM kill) fail the
FineTuneJob with a reason that names the pod and the field to fix, and stop its Ray cluster."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from graft.operator import kube as k
from graft.operator.backends.pods import pod_problem
from graft.operator.settings import OperatorSettings
from tests.unit.test_operator_loop import NS, Harness, condition

pytestmark = pytest.mark.unit


def pod(name: str, node_type: str, *, waiting: str | None = None, terminated: str | None = None,
        last_terminated: str | None = None, memory: str = "2Gi", cluster: str = "demo-c") -> dict[str, Any]:
    cs: dict[str, Any] = {"name": "ray-worker", "image": "example.org/ray:missing", "state": {"running": {}}, "lastState": {}}
    if waiting:
        cs["state"] = {"waiting": {"reason": waiting, "message": f"{waiting} for example.org/ray:missing"}}
    if terminated:
        cs["state"] = {"terminated": {"reason": terminated, "exitCode": 137}}
    if last_terminated:
        cs["lastState"] = {"terminated": {"reason": last_terminated, "exitCode": 137}}
    return {"metadata": {"name": name, "namespace": NS, "labels": {"ray.io/cluster": cluster, "ray.io/node-type": node_type}},
            "spec": {"containers": [{"name": "ray-worker", "resources": {"limits": {"memory": memory}}}]},
            "status": {"containerStatuses": [cs]}}


def test_healthy_pods_are_no_problem() -> None:
    assert pod_problem([pod("h", "head"), pod("w", "worker")]) is None


@pytest.mark.parametrize("reason", ["ErrImagePull", "ImagePullBackOff", "ErrImageNeverPull", "InvalidImageName"])
def test_an_image_that_cannot_be_pulled_names_the_image_and_spec_runtime_image(reason: str) -> None:
    problem = pod_problem([pod("demo-c-head", "head", waiting=reason)])
    assert problem is not None and problem.reason == "ImagePullFailed"
    assert "example.org/ray:missing" in problem.message and "spec.runtime.image" in problem.message


def test_a_worker_oom_kill_names_its_limit_and_memory_per_worker() -> None:
    problem = pod_problem([pod("h", "head"), pod("demo-c-w-1", "worker", last_terminated="OOMKilled", memory="512Mi")])
    assert problem is not None and problem.reason == "OOMKilled"
    assert "demo-c-w-1" in problem.message and "512Mi" in problem.message
    assert "spec.resources.memoryPerWorker" in problem.message


def test_a_container_that_exited_for_another_reason_is_left_to_ray() -> None:
    assert pod_problem([pod("w", "worker", last_terminated="Error")]) is None


@pytest.fixture
def h(tmp_path: Path) -> Harness:
    return Harness(OperatorSettings(storage_pvc="graft-storage", storage_mount_path=str(tmp_path), result_storage=str(tmp_path)))


def test_an_image_pull_failure_fails_the_job_and_deletes_its_rayjob(h: Harness) -> None:
    h.apply("demo")
    h.reconcile("demo")
    h.kuberay("demo", jobDeploymentStatus="Initializing", rayClusterName="demo-c")
    h.kube.pods = [pod("demo-c-head", "head", waiting="ErrImageNeverPull"), pod("other-head", "head", waiting="ErrImagePull", cluster="other")]
    h.reconcile("demo")
    st = h.status("demo")
    assert st["phase"] == "Failed"
    assert condition(st, "Succeeded")["reason"] == "ImagePullFailed"
    assert "demo-c-head" in st["message"]
    assert h.rayjob("demo") is None


def test_a_starting_cluster_is_looked_at_again_while_its_pods_are_not_watched(h: Harness) -> None:
    h.apply("demo")
    h.reconcile("demo")
    h.kuberay("demo", jobDeploymentStatus="Initializing", rayClusterName="demo-c")
    h.kube.pods = [pod("demo-c-head", "head")]
    again = h.reconcile("demo")
    assert again is not None and again > 0
    assert h.status("demo")["phase"] == "Pending"


def test_an_oom_killed_worker_fails_the_running_job(h: Harness) -> None:
    h.apply("demo")
    h.reconcile("demo")
    h.kuberay("demo", jobDeploymentStatus="Running", jobStatus="RUNNING", jobId="demo-x", rayClusterName="demo-c")
    h.kube.pods = [pod("demo-c-head", "head"), pod("demo-c-w", "worker", last_terminated="OOMKilled", memory="1Gi")]
    h.reconcile("demo")
    st = h.status("demo")
    assert (st["phase"], condition(st, "Succeeded")["reason"]) == ("Failed", "OOMKilled")
    assert h.kube.find(k.RAYJOBS, NS, "demo") is None
