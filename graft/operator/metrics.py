"""Prometheus metrics of the Graft operator, served by `start_metrics_server(port)`.

    graft_reconciles_total{kind, result}                    reconciles: success, retry (an expected failure),
                                                            error (any other exception: recorded on the object)
    graft_reconcile_errors_total{kind, error}               failed reconciles by exception class
    graft_finetunejobs{namespace, phase}                    FineTuneJobs known to this operator, by phase
    graft_finetunejob_phase_duration_seconds{phase}         time a job spent in a phase before leaving it
    graft_policy_admissions_total{result}                   FineTunePolicy decisions: allowed, rejected, waiting
    graft_api_requests_total{verb, resource}                Kubernetes API requests of the reconcile loop

The jobs gauge is computed from a per-job map (`set_job_phase`/`forget_job`), so replaying
handlers after a restart sets it right instead of drifting like inc/dec counting would.
"""

from __future__ import annotations

import threading
from wsgiref.simple_server import WSGIServer

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram, start_http_server

# 1 s to 1 day: phases last from moments (Pending) to many hours (Running).
PHASE_BUCKETS = (1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600, 7200, 14400, 43200, 86400)


class OperatorMetrics:
    """The operator's metrics, registered in `registry` (tests pass a fresh CollectorRegistry)."""

    def __init__(self, registry: CollectorRegistry = REGISTRY) -> None:
        self.registry = registry
        self.reconciles = Counter(
            "graft_reconciles", "Operator handler runs by resource kind and result.", ["kind", "result"], registry=registry
        )
        self.errors = Counter(
            "graft_reconcile_errors", "Failed operator handler runs by kind and exception class.", ["kind", "error"],
            registry=registry,
        )
        self.jobs = Gauge("graft_finetunejobs", "FineTuneJobs by namespace and phase.", ["namespace", "phase"], registry=registry)
        self.phase_duration = Histogram(
            "graft_finetunejob_phase_duration_seconds",
            "Seconds a FineTuneJob spent in a phase before it left it.",
            ["phase"],
            buckets=PHASE_BUCKETS,
            registry=registry,
        )
        self.admissions = Counter(
            "graft_policy_admissions", "FineTunePolicy admission decisions.", ["result"], registry=registry
        )
        self.api_requests = Counter(
            "graft_api_requests", "Kubernetes API requests made by the reconcile loop.", ["verb", "resource"],
            registry=registry,
        )
        self._phases: dict[tuple[str, str], str] = {}
        self._lock = threading.Lock()

    def record_reconcile(self, kind: str, result: str) -> None:
        """Count one reconcile; result is success, retry (an API or Ray error, retried later) or error
        (any other exception, recorded on the object and retried with backoff: graft.operator.guard)."""
        self.reconciles.labels(kind=kind, result=result).inc()

    def record_api(self, verb: str, resource: str) -> None:
        self.api_requests.labels(verb=verb, resource=resource).inc()

    def record_error(self, kind: str, error: BaseException | str) -> None:
        name = error if isinstance(error, str) else type(error).__name__
        self.errors.labels(kind=kind, error=name).inc()

    def set_job_phase(self, namespace: str, name: str, phase: str) -> None:
        """Record a FineTuneJob's current phase (idempotent) and recompute the gauge."""
        with self._lock:
            self._phases[(namespace, name)] = phase
            self._refresh_jobs()

    def forget_job(self, namespace: str, name: str) -> None:
        """Drop a deleted FineTuneJob from the gauge."""
        with self._lock:
            self._phases.pop((namespace, name), None)
            self._refresh_jobs()

    def observe_phase_duration(self, phase: str, seconds: float) -> None:
        """Record how long a job stayed in `phase`; call once when it leaves the phase."""
        self.phase_duration.labels(phase=phase).observe(max(0.0, seconds))

    def record_admission(self, result: str) -> None:
        """Count a FineTunePolicy decision: allowed, rejected or waiting (retryable capacity)."""
        self.admissions.labels(result=result).inc()

    def _refresh_jobs(self) -> None:
        counts: dict[tuple[str, str], int] = {}
        for (namespace, _), phase in self._phases.items():
            counts[(namespace, phase)] = counts.get((namespace, phase), 0) + 1
        self.jobs.clear()
        for (namespace, phase), count in counts.items():
            self.jobs.labels(namespace=namespace, phase=phase).set(count)


METRICS = OperatorMetrics()


def start_metrics_server(
    port: int, addr: str = "0.0.0.0", registry: CollectorRegistry = REGISTRY
) -> tuple[WSGIServer, threading.Thread]:
    """Serve /metrics on addr:port in a daemon thread; returns (server, thread).
    Stop it with `server.shutdown(); server.server_close()`. Port 0 picks a free port
    (read it back from `server.server_port`)."""
    return start_http_server(port, addr=addr, registry=registry)
