"""One object never stops the operator (issue 21, finding 8): whatever a tenant's object makes the
code raise is recorded on that object and retried with backoff, while the workers and the resync
thread go on serving everyone else."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from graft.api.spec import FineTuneJob
from graft.operator import kube as k
from graft.operator.guard import MAX_BACKOFF_SECONDS, RECONCILE_ERROR, RECONCILED
from graft.operator.metrics import METRICS
from graft.operator.settings import OperatorSettings
from tests.integration.helpers import wait_for
from tests.unit.fake_ray_dashboard import FakeRayDashboard
from tests.unit.test_operator_loop import NS, Harness, condition

pytestmark = [pytest.mark.unit, pytest.mark.tenancy]

BUGS = [KeyError("spec"), TypeError("unsupported operand"), ZeroDivisionError("division by zero")]


@pytest.fixture
def h(tmp_path: Path) -> Iterator[Harness]:
    harness = Harness(OperatorSettings(storage_pvc="graft-storage", storage_mount_path=str(tmp_path), result_storage=str(tmp_path), require_policy=False,
                                       resync_seconds=0.02, sweep_seconds=0.02, workers=1))
    yield harness
    harness.ctl.stop()


def _poison(h: Harness, monkeypatch: pytest.MonkeyPatch, name: str, error: BaseException) -> None:
    """The RayJob backend raises `error` for the job `name` only (e.g. an input nobody foresaw)."""
    observe = h.ctl.loop.rayjobs.observe

    def observe_or_raise(job: FineTuneJob, status: Any) -> Any:
        if job.metadata.name == name:
            raise error
        return observe(job, status)

    monkeypatch.setattr(h.ctl.loop.rayjobs, "observe", observe_or_raise)


def _errors(kind: str, error: str) -> float:
    return METRICS.registry.get_sample_value("graft_reconcile_errors_total", {"kind": kind, "error": error}) or 0.0


@pytest.mark.parametrize("error", BUGS, ids=lambda e: type(e).__name__)
def test_a_job_that_raises_anything_never_stops_the_workers_serving_the_others(
    h: Harness, monkeypatch: pytest.MonkeyPatch, error: BaseException
) -> None:
    _poison(h, monkeypatch, "hostile", error)
    h.apply("hostile")  # queued first: the one worker meets it before the other job
    h.apply("other")
    h.ctl.start()
    wait_for(lambda: h.rayjob("other"), timeout=30, what="the other tenant's job reconciled after the failing one")
    wait_for(lambda: condition(h.status("hostile"), RECONCILED), timeout=30, what="the failure recorded on the job")
    assert h.ctl.alive()


def test_the_failure_is_recorded_on_the_object_as_a_condition_an_event_and_a_metric(h: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    _poison(h, monkeypatch, "hostile", KeyError("labels"))
    before = _errors("FineTuneJob", "KeyError")
    h.ctl.events.start()
    h.apply("hostile")
    h.reconcile("hostile")
    cond = condition(h.status("hostile"), RECONCILED)
    assert (cond["status"], cond["reason"]) == ("False", RECONCILE_ERROR)
    assert cond["message"].startswith("KeyError: 'labels'") and "retrying in 10s" in cond["message"]
    wait_for(lambda: [e for e in h.kube.events if e["reason"] == RECONCILE_ERROR], timeout=10, what="the ReconcileError Event")
    assert _errors("FineTuneJob", "KeyError") == before + 1
    h.reconcile("hostile")
    h.ctl.events.post({"metadata": {"name": "marker", "namespace": NS}}, "Normal", "Marker", "")  # queued after any second one
    wait_for(lambda: [e for e in h.kube.events if e["reason"] == "Marker"], timeout=10, what="the marker Event")
    assert [e["reason"] for e in h.kube.events].count(RECONCILE_ERROR) == 1  # one Event per failing streak, not per retry


def test_a_failing_object_is_retried_with_growing_delays_up_to_a_cap(h: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    _poison(h, monkeypatch, "hostile", ZeroDivisionError("x"))
    h.apply("hostile")
    delays = [h.reconcile("hostile") for _ in range(7)]
    assert delays == [10, 20, 40, 80, 160, MAX_BACKOFF_SECONDS, MAX_BACKOFF_SECONDS]


def test_the_resync_leaves_a_failing_object_to_its_backoff(h: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    _poison(h, monkeypatch, "hostile", TypeError("x"))
    h.apply("hostile")
    h.apply("other")
    h.reconcile("hostile")
    queued: list[Any] = []
    monkeypatch.setattr(h.ctl.queue, "add", queued.append)
    h.ctl.resync_once()
    assert ("FineTuneJob", NS, "other") in queued and ("FineTuneJob", NS, "hostile") not in queued


def test_a_long_exception_text_is_cut_in_the_condition(h: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    _poison(h, monkeypatch, "hostile", ValueError("x" * 1_000_000))
    h.apply("hostile")
    h.reconcile("hostile")
    message = condition(h.status("hostile"), RECONCILED)["message"]
    assert len(message) < 1200 and "characters cut" in message


def test_the_condition_goes_and_the_backoff_restarts_once_a_pass_succeeds(h: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    h.apply("flaky")
    with monkeypatch.context() as m:
        _poison(h, m, "flaky", TypeError("once"))
        assert [h.reconcile("flaky") for _ in range(2)] == [10, 20]
    h.ctl.on_event(k.FINETUNEJOBS, "MODIFIED", h.kube.find(k.FINETUNEJOBS, NS, "flaky") or {})
    h.reconcile("flaky")
    assert condition(h.status("flaky"), RECONCILED) == {} and h.rayjob("flaky") is not None
    assert h.ctl.loop.backoff.failures(("FineTuneJob", NS, "flaky")) == 0


def test_a_deleted_object_leaves_nothing_behind_in_the_backoff(h: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    _poison(h, monkeypatch, "hostile", TypeError("x"))
    h.apply("hostile")
    h.reconcile("hostile")
    h.ctl.on_event(k.FINETUNEJOBS, "DELETED", h.kube.find(k.FINETUNEJOBS, NS, "hostile") or {})
    assert h.ctl.loop.backoff.failures(("FineTuneJob", NS, "hostile")) == 0


def test_an_endpoint_that_raises_is_recorded_and_retried(h: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(endpoint: Any) -> Any:
        raise KeyError("applications")

    monkeypatch.setattr(h.ctl.loop.rayservices, "apply", broken)
    doc = {"apiVersion": "graft.dev/v1alpha1", "kind": "ModelEndpoint", "metadata": {"name": "ep", "namespace": NS},
           "spec": {"model": {"uri": "s3://b/m", "version": 1}}}
    h.ctl.on_event(k.MODELENDPOINTS, "ADDED", h.kube.seed(k.MODELENDPOINTS, doc))
    assert h.ctl.loop.reconcile_endpoint(NS, "ep") == 10
    st = (h.kube.find(k.MODELENDPOINTS, NS, "ep") or {}).get("status") or {}
    assert condition(st, RECONCILED)["reason"] == RECONCILE_ERROR


def test_the_resync_thread_survives_a_resync_and_a_sweep_that_raise(h: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = {"resync": 0, "sweep": 0}

    def resync() -> None:
        calls["resync"] += 1
        raise KeyError("metadata")

    def sweep(*args: Any) -> list[str]:
        calls["sweep"] += 1
        raise TypeError("'int' object is not iterable")

    monkeypatch.setattr(h.ctl, "resync_once", resync)
    monkeypatch.setattr(h.ctl.sweeper, "run", sweep)
    h.ctl.start()
    wait_for(lambda: calls["resync"] >= 3 and calls["sweep"] >= 3, timeout=30, what=lambda: f"passes after failures: {calls}")
    assert h.ctl.alive()


def test_one_shared_cluster_that_raises_never_stops_the_sweep_of_the_others(h: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    import graft.operator.sweep as sweep

    swept: list[str] = []

    def sweep_one(dashboard: str, *args: Any) -> list[str]:
        swept.append(dashboard)
        if dashboard == "http://a":
            raise ZeroDivisionError("a bug on one cluster")
        return [f"stopped-on-{dashboard}"]

    monkeypatch.setattr(sweep, "_sweep_one", sweep_one)
    h.ctl.sweeper.known |= {"http://a", "http://b"}
    assert h.ctl.sweeper.run([], [], 0.0) == ["stopped-on-http://b"] and swept == ["http://a", "http://b"]


@pytest.mark.parametrize("storage", ["gs://x/", "az://c/p", "hdfs://nn/p", "https://host/p"])
def test_a_storage_scheme_graft_cannot_write_is_refused_before_any_ray_job(h: Harness, storage: str) -> None:
    h.apply("gs", checkpoints={"storage": storage}, runtime={"ttlSecondsAfterFinished": 0})
    assert h.reconcile("gs") is None
    st = h.status("gs")
    assert st["phase"] == "Failed" and condition(st, "Accepted")["reason"] == "StorageRequired"
    assert "spec.checkpoints.storage" in st["message"] and "use s3://BUCKET/PATH" in st["message"]
    assert h.rayjob("gs") is None


def test_a_storage_scheme_graft_cannot_write_is_refused_before_a_shared_cluster_submission(tmp_path: Path) -> None:
    with FakeRayDashboard() as dashboard:
        h = Harness(OperatorSettings(require_policy=False, shared_dashboard_url=dashboard.url))
        h.apply("gs", checkpoints={"storage": "gs://x/"}, runtime={"cluster": {"name": "shared"}, "ttlSecondsAfterFinished": 0})
        assert h.reconcile("gs") is None
        assert "spec.checkpoints.storage" in h.status("gs")["message"] and dashboard.requests("POST") == []


def test_an_event_the_api_server_chokes_on_never_ends_the_event_thread(h: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    post = h.kube.create_event

    def create_event(body: dict[str, Any]) -> None:
        if body["reason"] == "Poison":
            raise RuntimeError("urllib3 gave up")
        post(body)

    monkeypatch.setattr(h.kube, "create_event", create_event)
    h.ctl.events.start()
    obj = {"apiVersion": "graft.dev/v1alpha1", "kind": "FineTuneJob", "metadata": {"name": "j", "namespace": NS}}
    h.ctl.events.post(obj, "Warning", "Poison", "x")
    h.ctl.events.post(obj, "Normal", "After", "y")
    wait_for(lambda: [e for e in h.kube.events if e["reason"] == "After"], timeout=10, what="the Event after the failing one")
