"""Pod failures KubeRay does not report (an image that cannot be pulled, an OOM kill) fail the
FineTuneJob with a reason that names the pod and the field to fix, and stop its Ray cluster."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from graft.operator import kube as k
from graft.operator.backends.pods import pod_problem, slim
from graft.operator.names import LABEL_JOB, LABEL_MANAGED_BY, MANAGED_BY
from graft.operator.settings import OperatorSettings
from tests.unit.test_operator_loop import NS, Harness, condition

pytestmark = pytest.mark.unit


def pod(name: str, node_type: str, *, waiting: str | None = None, terminated: str | None = None,
        last_terminated: str | None = None, memory: str = "2Gi", cluster: str = "demo-c", job: str = "demo") -> dict[str, Any]:
    cs: dict[str, Any] = {"name": "ray-worker", "image": "example.org/ray:missing", "state": {"running": {}}, "lastState": {}}
    if waiting:
        cs["state"] = {"waiting": {"reason": waiting, "message": f"{waiting} for example.org/ray:missing"}}
    if terminated:
        cs["state"] = {"terminated": {"reason": terminated, "exitCode": 137}}
    if last_terminated:
        cs["lastState"] = {"terminated": {"reason": last_terminated, "exitCode": 137}}
    labels = {"ray.io/cluster": cluster, "ray.io/node-type": node_type, LABEL_MANAGED_BY: MANAGED_BY, LABEL_JOB: job}
    return {"metadata": {"name": name, "namespace": NS, "labels": labels, "resourceVersion": "1"},
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
    return Harness(OperatorSettings(storage_pvc="graft-storage", storage_mount_path=str(tmp_path), result_storage=str(tmp_path),
                                    require_policy=False))


def watch(h: Harness, *pods: dict[str, Any]) -> None:
    """The pod watch delivering `pods`, as kopf would."""
    for p in pods:
        h.ctl.on_event(k.PODS, "ADDED", p)


def test_an_image_pull_failure_fails_the_job_and_deletes_its_rayjob(h: Harness) -> None:
    h.apply("demo")
    h.reconcile("demo")
    h.kuberay("demo", jobDeploymentStatus="Initializing", rayClusterName="demo-c")
    watch(h, pod("demo-c-head", "head", waiting="ErrImageNeverPull"), pod("other-head", "head", waiting="ErrImagePull", cluster="other", job="other"))
    h.reconcile("demo")
    st = h.status("demo")
    assert st["phase"] == "Failed"
    assert condition(st, "Succeeded")["reason"] == "ImagePullFailed"
    assert "demo-c-head" in st["message"]
    assert h.rayjob("demo") is None


def test_a_pod_that_shows_a_problem_queues_its_job_and_a_healthy_one_does_not(h: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    queued: list[Any] = []
    monkeypatch.setattr(h.ctl.queue, "add", queued.append)
    watch(h, pod("demo-c-head", "head"))
    assert queued == []
    watch(h, pod("demo-c-w", "worker", waiting="ImagePullBackOff"))
    assert queued == [("FineTuneJob", NS, "demo")]


def test_a_starting_cluster_waits_for_pod_events_without_listing_pods(h: Harness) -> None:
    h.apply("demo")
    h.reconcile("demo")
    h.kuberay("demo", jobDeploymentStatus="Initializing", rayClusterName="demo-c")
    watch(h, pod("demo-c-head", "head"))
    h.kube.reset_calls()
    assert h.reconcile("demo") is None  # nothing to poll: a failing pod's event queues the job
    assert h.status("demo")["phase"] == "Pending" and h.kube.reads() == 0


def test_an_oom_killed_worker_fails_the_running_job(h: Harness) -> None:
    h.apply("demo")
    h.reconcile("demo")
    h.kuberay("demo", jobDeploymentStatus="Running", jobStatus="RUNNING", jobId="demo-x", rayClusterName="demo-c")
    watch(h, pod("demo-c-head", "head"), pod("demo-c-w", "worker", last_terminated="OOMKilled", memory="1Gi"))
    h.reconcile("demo")
    st = h.status("demo")
    assert (st["phase"], condition(st, "Succeeded")["reason"]) == ("Failed", "OOMKilled")
    assert h.kube.find(k.RAYJOBS, NS, "demo") is None


def test_a_stored_pod_keeps_only_what_failures_are_read_from() -> None:
    full = pod("demo-c-w", "worker", last_terminated="OOMKilled", memory="1Gi")
    full["spec"]["containers"][0].update(image="example.org/ray:1", env=[{"name": "A", "value": "x" * 1000}], command=["ray"])
    full["status"].update(phase="Running", conditions=[{"type": "Ready"}], podIP="10.0.0.1")

    kept = slim(full)
    assert pod_problem([kept]) == pod_problem([full])
    assert "env" not in kept["spec"]["containers"][0] and "conditions" not in kept["status"]
