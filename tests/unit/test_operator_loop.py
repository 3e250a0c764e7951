"""The controller driven with a fake API: what one reconcile reads, writes and decides.

Watch events are delivered by the harness (as kopf would), reconciles are called directly, and
the fake counts every API call, so these tests pin the costs too (no reads, at most two writes
per job creation)."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import pytest

from graft.api.status import Phase
from graft.operator import kube as k
from graft.operator.controller import Controller
from graft.operator.finalizer import FINALIZER, MAX_CLEANUP_TRIES, POLL_SECONDS, UNREACHABLE_SECONDS
from graft.operator.settings import OperatorSettings
from graft.operator.shared.jobs import ClusterUnavailable
from tests.integration.helpers import wait_for
from tests.unit.fake_kube import FakeKube

pytestmark = pytest.mark.unit

NS = "team-a"
QUEUE_LABEL = "kueue.x-k8s.io/queue-name"


class Harness:
    def __init__(self, settings: OperatorSettings) -> None:
        self.kube = FakeKube()
        self.ctl = Controller(self.kube, settings, [NS])  # type: ignore[arg-type]

    def deliver(self) -> None:
        """The watch catching up: every object whose version the store has not seen."""
        for kind in (k.FINETUNEJOBS, k.RAYJOBS, k.MODELENDPOINTS, k.RAYSERVICES, k.FINETUNEPOLICIES):
            for obj in self.kube.all(kind):
                self.ctl.on_event(kind, "MODIFIED", obj)

    def apply(self, name: str, labels: dict[str, str] | None = None, **spec: Any) -> None:
        body = {"model": {"source": "/models/m"}, "dataset": {"source": "s3://b/d.csv"}, **spec}
        doc = {"apiVersion": "graft.dev/v1alpha1", "kind": "FineTuneJob",
               "metadata": {"name": name, "namespace": NS, "labels": labels or {}}, "spec": body}
        self.ctl.on_event(k.FINETUNEJOBS, "ADDED", self.kube.seed(k.FINETUNEJOBS, doc))

    def policy(self, name: str, **spec: Any) -> None:
        doc = {"apiVersion": "graft.dev/v1alpha1", "kind": "FineTunePolicy", "metadata": {"name": name}, "spec": spec}
        self.ctl.on_event(k.FINETUNEPOLICIES, "ADDED", self.kube.seed(k.FINETUNEPOLICIES, doc))

    def reconcile(self, name: str) -> float | None:
        return self.ctl.loop.reconcile_job(NS, name)

    def status(self, name: str) -> dict[str, Any]:
        return (self.kube.find(k.FINETUNEJOBS, NS, name) or {}).get("status") or {}

    def rayjob(self, name: str) -> dict[str, Any] | None:
        return self.kube.find(k.RAYJOBS, NS, name)

    def kuberay(self, name: str, **status: Any) -> None:
        """KubeRay writing RayJob status, and the watch delivering it."""
        self.ctl.on_event(k.RAYJOBS, "MODIFIED", self.kube.set_status(k.RAYJOBS, NS, name, status))

    def suspend(self, name: str, value: bool) -> None:
        self.ctl.on_event(k.FINETUNEJOBS, "MODIFIED", self.kube.patch(k.FINETUNEJOBS, NS, name, {"spec": {"suspend": value}}))


@pytest.fixture
def h(tmp_path: Path) -> Harness:
    return Harness(OperatorSettings(storage_pvc="graft-storage", storage_mount_path=str(tmp_path), result_storage=str(tmp_path),
                                    require_policy=False))


def condition(st: dict[str, Any], type_: str) -> dict[str, Any]:
    return next((c for c in st.get("conditions") or [] if c["type"] == type_), {})


def test_creating_a_job_costs_the_rayjob_and_one_status_write_and_no_reads(h: Harness) -> None:
    h.apply("demo")
    h.kube.reset_calls()
    h.reconcile("demo")
    assert h.rayjob("demo") is not None
    assert (h.kube.calls["create"], h.kube.calls["patch_status"], h.kube.reads()) == (1, 1, 0)
    assert h.status("demo")["phase"] == "Pending" and h.status("demo")["rayJobName"] == "demo"


def test_the_watch_echo_of_our_own_writes_costs_nothing(h: Harness) -> None:
    h.apply("demo")
    h.reconcile("demo")
    queued = len(h.ctl.queue)  # the create event's own entry
    h.deliver()
    assert len(h.ctl.queue) == queued


def test_rayjob_status_flows_into_the_job_with_one_write(h: Harness) -> None:
    h.apply("demo")
    h.reconcile("demo")
    h.kuberay("demo", jobDeploymentStatus="Running", jobStatus="RUNNING", jobId="demo-x", rayClusterName="demo-c")
    h.kube.reset_calls()
    h.reconcile("demo")
    st = h.status("demo")
    assert st["phase"] == "Running" and st["rayClusterName"] == "demo-c"
    assert (h.kube.writes(), h.kube.reads()) == (1, 0)  # the cluster's pods come from the watch, not a list


def test_unreachable_storage_refuses_the_job_before_any_pod(tmp_path: Path) -> None:
    h = Harness(OperatorSettings(require_policy=False))  # no PVC, no object store, no storage in the spec
    h.apply("nowhere", checkpoints={"storage": "/tmp/graft"})
    h.reconcile("nowhere")
    st = h.status("nowhere")
    assert st["phase"] == "Failed" and condition(st, "Accepted")["reason"] == "StorageRequired"
    assert "spec.checkpoints.storage" in st["message"] and h.rayjob("nowhere") is None


def test_an_object_store_is_reachable_from_every_pod() -> None:
    h = Harness(OperatorSettings(require_policy=False))
    h.apply("s3", checkpoints={"storage": "s3://bucket/graft"})
    h.reconcile("s3")
    assert h.rayjob("s3") is not None


def test_the_queue_label_on_the_finetunejob_hands_the_rayjob_to_kueue(h: Harness) -> None:
    h.apply("queued", labels={QUEUE_LABEL: "team-a-queue"})
    h.reconcile("queued")
    rj = h.rayjob("queued")
    assert rj is not None and rj["metadata"]["labels"][QUEUE_LABEL] == "team-a-queue" and rj["spec"]["suspend"] is True
    assert h.status("queued")["admitted"]["queueName"] == "team-a-queue"


def test_a_policy_default_queue_is_persisted_and_kueue_is_never_overridden(h: Harness) -> None:
    h.policy("defaults", runtimeDefaults={"queueName": "shared-queue"})
    h.apply("held")
    h.reconcile("held")
    assert h.status("held")["admitted"]["queueName"] == "shared-queue"
    assert h.status("held")["admitted"]["defaultsFrom"] == {"queueName": "defaults"}
    h.ctl.on_event(k.FINETUNEPOLICIES, "DELETED", h.kube.find(k.FINETUNEPOLICIES, "", "defaults") or {})
    h.kube.delete(k.FINETUNEPOLICIES, "", "defaults")
    h.kuberay("held", jobDeploymentStatus="Suspended")
    h.kube.reset_calls()
    for _ in range(3):  # later reconciles, with the policy gone: the admitted queue still holds
        h.reconcile("held")
    rj = h.rayjob("held")
    assert rj is not None and rj["spec"]["suspend"] is True and h.kube.calls["patch"] == 0
    assert h.status("held")["phase"] == "Pending" and condition(h.status("held"), "Running")["reason"] == "QueuedByKueue"


def test_suspend_and_resume_toggle_the_rayjob(h: Harness) -> None:
    h.apply("pause")
    h.reconcile("pause")
    h.suspend("pause", True)
    h.reconcile("pause")
    assert (h.rayjob("pause") or {})["spec"]["suspend"] is True
    h.kuberay("pause", jobDeploymentStatus="Suspended")
    h.reconcile("pause")
    assert h.status("pause")["phase"] == "Suspended"
    h.suspend("pause", False)
    h.reconcile("pause")
    assert (h.rayjob("pause") or {})["spec"]["suspend"] is False


def test_resume_runs_admission_again_against_the_current_policies(h: Harness) -> None:
    h.apply("pause", resources={"workers": 4})
    h.reconcile("pause")
    h.suspend("pause", True)
    h.reconcile("pause")
    h.kuberay("pause", jobDeploymentStatus="Suspended")
    h.policy("tight", limits={"maxWorkers": 2})
    h.suspend("pause", False)
    h.reconcile("pause")
    st = h.status("pause")
    assert st["phase"] == "Rejected" and "maxWorkers 2" in st["message"]
    assert (h.rayjob("pause") or {})["spec"]["suspend"] is True  # never resumed


def test_a_missing_rayjob_is_recreated_from_the_admitted_spec(h: Harness) -> None:
    h.policy("defaults", runtimeDefaults={"image": "registry.local/graft:1"})
    h.apply("again")
    h.reconcile("again")
    h.kube.delete(k.RAYJOBS, NS, "again")
    h.ctl.on_event(k.RAYJOBS, "DELETED", {"metadata": {"name": "again", "namespace": NS}})
    h.ctl.on_event(k.FINETUNEPOLICIES, "MODIFIED", h.kube.patch(
        k.FINETUNEPOLICIES, "", "defaults", {"spec": {"runtimeDefaults": {"image": "registry.local/other:2"}}}))
    h.reconcile("again")
    rj = h.rayjob("again")
    assert rj is not None
    images = {rj["spec"]["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]["containers"][0]["image"]}
    assert images == {"registry.local/graft:1"}


def test_concurrent_creates_under_max_concurrent_jobs_admit_exactly_the_limit(h: Harness) -> None:
    h.policy("one-at-a-time", limits={"maxConcurrentJobs": 1})
    names = [f"race-{i}" for i in range(10)]
    for name in names:
        h.apply(name)
    barrier = threading.Barrier(len(names))

    def go(name: str) -> None:
        barrier.wait()
        h.reconcile(name)

    threads = [threading.Thread(target=go, args=(n,)) for n in names]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(h.kube.all(k.RAYJOBS)) == 1
    waiting = [n for n in names if h.status(n).get("message", "").startswith("waiting:")]
    assert len(waiting) == 9


def test_a_finished_job_reads_its_result_promotes_and_deletes_the_rayjob_after_its_ttl(h: Harness, tmp_path: Path) -> None:
    h.apply("done", serving={"promotion": "always"}, runtime={"ttlSecondsAfterFinished": 0})
    h.reconcile("done")
    uid = (h.kube.find(k.FINETUNEJOBS, NS, "done") or {})["metadata"]["uid"]
    run = tmp_path / NS / f"done-{uid[:8]}"
    run.mkdir(parents=True)
    (run / "result.json").write_text(json.dumps({
        "jobName": "done", "status": "succeeded", "metric": "eval_accuracy", "mode": "max", "bestScore": 0.91,
        "bestTrialId": "t1", "modelUri": str(run / "done" / "model"), "startedAt": "a", "finishedAt": "b"}))
    h.kuberay("done", jobDeploymentStatus="Complete", jobStatus="SUCCEEDED", endTime="2026-01-01T00:00:00Z")
    h.reconcile("done")
    st = h.status("done")
    assert st["phase"] == "Succeeded" and st["bestMetric"] == "0.91" and st["promotion"]["decision"] == "promoted"
    assert condition(st, "RayJobDeleted")["status"] == "True" and h.rayjob("done") is None
    assert h.kube.find(k.MODELENDPOINTS, NS, "done") is not None


def test_a_job_that_failed_on_storage_reads_its_result_once_and_fails_with_storage_failed(h: Harness, tmp_path: Path) -> None:
    h.apply("lost")
    h.reconcile("lost")
    uid = (h.kube.find(k.FINETUNEJOBS, NS, "lost") or {})["metadata"]["uid"]
    run = tmp_path / NS / f"lost-{uid[:8]}"
    run.mkdir(parents=True)
    (run / "result.json").write_text(json.dumps({
        "jobName": "lost", "status": "failed", "reason": "StorageFailed", "metric": "eval_accuracy", "mode": "max",
        "message": "tuning failed: storage s3://b/root failed: AWS Error NETWORK_CONNECTION", "startedAt": "a", "finishedAt": "b"}))
    h.kuberay("lost", jobDeploymentStatus="Failed", jobStatus="FAILED", reason="AppFailed", message="Job entrypoint command failed")
    h.reconcile("lost")
    st = h.status("lost")
    assert (st["phase"], condition(st, "Succeeded")["reason"]) == ("Failed", "StorageFailed")
    assert "s3://b/root" in st["message"] and st["result"]["reason"] == "StorageFailed"


def test_a_failed_job_without_a_result_fails_with_the_rayjobs_reason_at_once(h: Harness) -> None:
    h.apply("gone")
    h.reconcile("gone")
    h.kuberay("gone", jobDeploymentStatus="Failed", jobStatus="FAILED", reason="AppFailed", message="Job entrypoint command failed")
    h.reconcile("gone")
    st = h.status("gone")
    assert (st["phase"], condition(st, "Succeeded")["reason"], st["message"]) == ("Failed", "AppFailed", "Job entrypoint command failed")


def test_live_progress_is_read_while_the_job_runs(h: Harness, tmp_path: Path) -> None:
    h.apply("live", tuning={"numTrials": 4})
    h.reconcile("live")
    uid = (h.kube.find(k.FINETUNEJOBS, NS, "live") or {})["metadata"]["uid"]
    run = tmp_path / NS / f"live-{uid[:8]}"
    run.mkdir(parents=True)
    (run / "progress.json").write_text(json.dumps({
        "trials": "1/4 (2 running)", "trialsTotal": 4, "trialsRunning": 2, "trialsCompleted": 1, "bestScore": 0.8,
        "bestTrial": "t0", "epoch": 2, "epochs": 3, "etaSeconds": 120, "updated": "2020-01-01T00:00:00Z"}))
    h.kuberay("live", jobDeploymentStatus="Running", jobStatus="RUNNING")
    first = h.reconcile("live")  # starts the read in the background; the reconcile does not wait for it
    wait_for(lambda: h.ctl.progress_reads.latest((NS, "live"), "unused") is not None, timeout=10, what="the progress read")
    again = h.reconcile("live")  # what the read's callback queues
    st = h.status("live")
    assert st["progress"]["trials"] == "1/4 (2 running)" and st["bestMetric"] == "0.8" and st["metric"] == "eval_accuracy"
    assert first == again == h.ctl.settings.progress_seconds


def test_a_phase_change_posts_one_event_off_the_reconcile_path(h: Harness) -> None:
    h.apply("ev")
    h.reconcile("ev")
    h.kuberay("ev", jobDeploymentStatus="Running", jobStatus="RUNNING")
    h.reconcile("ev")
    h.reconcile("ev")
    assert h.kube.calls["create_event"] == 0  # queued, not posted inline
    h.ctl.events.start()
    h.ctl.events.stop()
    assert [e["reason"] for e in h.kube.events] == [Phase.PENDING.value, Phase.RUNNING.value]


def test_an_unreachable_dashboard_leaves_the_jobs_own_log_as_log_uri(h: Harness, tmp_path: Path) -> None:
    h.apply("nolog", serving={"enabled": False})
    h.reconcile("nolog")
    h.kuberay("nolog", jobDeploymentStatus="Complete", jobStatus="FAILED", dashboardURL="127.0.0.1:1", jobId="nolog-1",
              message="entrypoint failed")
    h.reconcile("nolog")
    st = h.status("nolog")
    assert st["phase"] == "Failed" and st["message"] == "entrypoint failed"
    assert st["logUri"].startswith(str(tmp_path)) and st["logUri"].endswith("/job.log")  # written by graft.jobs


def _resyncing(tmp_path: Path, **settings: Any) -> Harness:
    return Harness(OperatorSettings(storage_pvc="graft-storage", storage_mount_path=str(tmp_path),
                                    resync_seconds=0.02, sweep_seconds=0.02, workers=1, **{"require_policy": False, **settings}))


def test_the_loop_stays_alive_while_a_shared_cluster_is_unreachable(tmp_path: Path) -> None:
    h = _resyncing(tmp_path)
    h.apply("shared", runtime={"cluster": {"name": "shared"}})  # shared-head-svc.team-a.svc does not resolve here
    h.ctl.on_event(k.FINETUNEJOBS, "MODIFIED", h.kube.set_status(k.FINETUNEJOBS, NS, "shared", {"admitted": {"policies": []}}))
    h.ctl.start()
    try:
        wait_for(lambda: h.ctl.sweeper.known, timeout=30, what="a sweep of the job's cluster")
        swept = h.ctl.sweeper._last
        wait_for(lambda: h.ctl.sweeper._last > swept, timeout=30, what="a second sweep of the unreachable cluster")
        assert h.ctl.alive()
    finally:
        h.ctl.stop()


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")  # the death is the point
def test_liveness_fails_once_the_resync_thread_has_died(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    h = _resyncing(tmp_path)

    def broken() -> None:
        raise SystemExit("the thread ends")  # not an Exception: graft.operator.guard lets it end the thread

    monkeypatch.setattr(h.ctl, "resync_once", broken)
    h.ctl.start()
    try:
        wait_for(lambda: not h.ctl.alive(), timeout=30, what="the probe to report the dead resync thread")
    finally:
        h.ctl.stop()


# ---------------------------------------------------------------- the shared-cluster finalizer
def _deleting(h: Harness, name: str) -> None:
    """The API server marking the object for deletion (it stays while a finalizer is on it)."""
    obj = h.kube.patch(k.FINETUNEJOBS, NS, name, {"metadata": {"deletionTimestamp": "2026-01-01T00:00:00Z"}})
    h.ctl.on_event(k.FINETUNEJOBS, "MODIFIED", obj)


def _finalizers(h: Harness, name: str) -> list[str]:
    return list((h.kube.find(k.FINETUNEJOBS, NS, name) or {})["metadata"].get("finalizers") or [])


def _shared(h: Harness, name: str = "shared") -> None:
    """A job on a shared cluster, admitted (status.admitted), after one pass (its dashboard does not
    resolve here, so the pass ends there)."""
    h.apply(name, runtime={"cluster": {"name": "shared"}})
    h.ctl.on_event(k.FINETUNEJOBS, "MODIFIED", h.kube.set_status(k.FINETUNEJOBS, NS, name, {"phase": "Pending", "admitted": {"policies": []}}))
    h.reconcile(name)


def test_a_shared_cluster_job_gets_the_finalizer_before_any_ray_work(h: Harness) -> None:
    h.apply("shared", runtime={"cluster": {"name": "shared"}})  # the dashboard does not resolve here
    h.reconcile("shared")
    assert _finalizers(h, "shared") == [FINALIZER]


def test_deleting_a_never_admitted_job_never_calls_its_cluster(h: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    h.apply("refused", runtime={"cluster": {"address": "http://10.0.0.1:8265"}})  # not a Service of the namespace
    h.reconcile("refused")
    assert h.status("refused")["phase"] == "Rejected"
    h.kube.patch(k.FINETUNEJOBS, NS, "refused", {"metadata": {"finalizers": [FINALIZER]}})  # e.g. from an older operator
    monkeypatch.setattr(h.ctl.loop.shared_jobs, "cleanup", lambda job, status: pytest.fail("the refused address was called"))
    _deleting(h, "refused")
    assert h.reconcile("refused") is None and _finalizers(h, "refused") == []


def test_a_rayjob_path_job_gets_no_finalizer(h: Harness) -> None:
    h.apply("own")
    h.reconcile("own")
    assert _finalizers(h, "own") == []


def test_deleting_waits_for_the_ray_work_to_stop_then_removes_the_finalizer(h: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    _shared(h)
    stopped = iter([False, True])  # still stopping, then gone
    monkeypatch.setattr(h.ctl.loop.shared_jobs, "cleanup", lambda job, status: next(stopped))
    _deleting(h, "shared")
    assert h.reconcile("shared") == POLL_SECONDS and _finalizers(h, "shared") == [FINALIZER]
    h.ctl.on_event(k.FINETUNEJOBS, "MODIFIED", h.kube.find(k.FINETUNEJOBS, NS, "shared"))
    assert h.reconcile("shared") is None and _finalizers(h, "shared") == []


def test_an_unreachable_cluster_never_blocks_deletion_for_good(h: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    _shared(h)

    def unreachable(job: Any, status: Any) -> bool:
        raise ClusterUnavailable("cannot reach the Ray dashboard")

    monkeypatch.setattr(h.ctl.loop.shared_jobs, "cleanup", unreachable)
    _deleting(h, "shared")
    waits = [h.reconcile("shared") for _ in range(MAX_CLEANUP_TRIES)]
    assert waits == [UNREACHABLE_SECONDS] * (MAX_CLEANUP_TRIES - 1) + [None]
    assert _finalizers(h, "shared") == []
