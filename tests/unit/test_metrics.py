"""graft.operator.metrics: counters, the jobs-by-phase gauge, the phase histogram and /metrics over HTTP."""

from __future__ import annotations

import urllib.request

import pytest
from prometheus_client import CollectorRegistry

from graft.operator.metrics import OperatorMetrics, start_metrics_server

pytestmark = pytest.mark.unit


@pytest.fixture
def metrics() -> OperatorMetrics:
    return OperatorMetrics(CollectorRegistry())


def value(m: OperatorMetrics, name: str, **labels: str) -> float | None:
    return m.registry.get_sample_value(name, labels)


def test_a_retried_reconcile_counts_retry_and_its_error_class(metrics: OperatorMetrics) -> None:
    metrics.record_reconcile("FineTuneJob", "retry")
    metrics.record_error("FineTuneJob", KeyError("status"))
    assert value(metrics, "graft_reconciles_total", kind="FineTuneJob", result="retry") == 1
    assert value(metrics, "graft_reconcile_errors_total", kind="FineTuneJob", error="KeyError") == 1


def test_api_requests_are_counted_by_verb_and_resource(metrics: OperatorMetrics) -> None:
    metrics.record_api("create", "rayjobs")
    metrics.record_api("create", "rayjobs")
    assert value(metrics, "graft_api_requests_total", verb="create", resource="rayjobs") == 2


def test_jobs_gauge_counts_current_phase_per_namespace(metrics: OperatorMetrics) -> None:
    metrics.set_job_phase("team-a", "one", "Pending")
    metrics.set_job_phase("team-a", "two", "Pending")
    metrics.set_job_phase("team-a", "one", "Running")
    metrics.set_job_phase("team-a", "one", "Running")  # replay after a restart: no drift
    assert value(metrics, "graft_finetunejobs", namespace="team-a", phase="Pending") == 1
    assert value(metrics, "graft_finetunejobs", namespace="team-a", phase="Running") == 1


def test_forgotten_job_leaves_the_gauge(metrics: OperatorMetrics) -> None:
    metrics.set_job_phase("team-a", "one", "Succeeded")
    metrics.forget_job("team-a", "one")
    assert value(metrics, "graft_finetunejobs", namespace="team-a", phase="Succeeded") is None


def test_phase_duration_is_a_histogram(metrics: OperatorMetrics) -> None:
    metrics.observe_phase_duration("Running", 90)
    assert value(metrics, "graft_finetunejob_phase_duration_seconds_count", phase="Running") == 1
    assert value(metrics, "graft_finetunejob_phase_duration_seconds_bucket", phase="Running", le="120.0") == 1
    assert value(metrics, "graft_finetunejob_phase_duration_seconds_bucket", phase="Running", le="60.0") == 0


def test_admissions_are_counted_by_result(metrics: OperatorMetrics) -> None:
    metrics.record_admission("rejected")
    assert value(metrics, "graft_policy_admissions_total", result="rejected") == 1


def test_metrics_server_serves_the_registry(metrics: OperatorMetrics) -> None:
    metrics.record_reconcile("FineTuneJob", "success")
    server, thread = start_metrics_server(0, addr="127.0.0.1", registry=metrics.registry)
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{server.server_port}/metrics", timeout=10) as resp:
            body = resp.read().decode()
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
    assert 'graft_reconciles_total{kind="FineTuneJob",result="success"} 1.0' in body
