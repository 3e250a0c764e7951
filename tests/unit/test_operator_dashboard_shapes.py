"""A "dashboard" that answers JSON of the wrong shape (issue 21, finding 8): a shared-cluster address
is the tenant's to choose, so whatever it answers must be a typed error the backend handles
(ClusterUnavailable: retried, the job waits) and never an exception that ends a worker. The fake
dashboard is real HTTP (tests/unit/fake_ray_dashboard.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from graft.operator import kube as k
from graft.operator.guard import RECONCILED, RETRY_SECONDS
from graft.operator.settings import OperatorSettings
from graft.operator.sweep import Sweeper
from tests.unit.fake_ray_dashboard import FakeRayDashboard
from tests.unit.test_operator_loop import NS, Harness, condition

pytestmark = [pytest.mark.unit, pytest.mark.tenancy]

SHAPES = [[], "x", 42, None]  # JSON that is no object at all
JOB_SHAPES = SHAPES + [{"start_time": "yesterday"}]  # a job record whose times are not integers
SERVE_SHAPES = SHAPES + [{"applications": [1]}, {"applications": {"team-b.ep": 42}}, {"http_options": "x"}]


@pytest.fixture
def dashboard() -> Iterator[FakeRayDashboard]:
    with FakeRayDashboard() as fake:
        yield fake


@pytest.fixture
def h(tmp_path: Path, dashboard: FakeRayDashboard) -> Harness:
    return Harness(OperatorSettings(storage_pvc="graft-storage", storage_mount_path=str(tmp_path), result_storage=str(tmp_path), require_policy=False,
                                    shared_dashboard_url=dashboard.url))


def _endpoint(h: Harness) -> None:
    doc = {"apiVersion": "graft.dev/v1alpha1", "kind": "ModelEndpoint", "metadata": {"name": "ep", "namespace": NS},
           "spec": {"model": {"uri": "s3://b/m", "version": 1}, "cluster": {"name": "shared"}}}
    h.ctl.on_event(k.MODELENDPOINTS, "ADDED", h.kube.seed(k.MODELENDPOINTS, doc))


def _endpoint_status(h: Harness) -> dict[str, Any]:
    return (h.kube.find(k.MODELENDPOINTS, NS, "ep") or {}).get("status") or {}


@pytest.mark.parametrize("shape", JOB_SHAPES, ids=repr)
def test_a_job_on_a_dashboard_answering_the_wrong_shape_waits_and_retries(h: Harness, dashboard: FakeRayDashboard, shape: Any) -> None:
    dashboard.wrong_shape.append(shape)
    h.apply("shared", runtime={"cluster": {"name": "shared"}})
    assert h.reconcile("shared") == RETRY_SECONDS  # the backend's typed error, not the catch-all
    assert dashboard.requests("GET") and condition(h.status("shared"), RECONCILED) == {}


@pytest.mark.parametrize("shape", SERVE_SHAPES, ids=repr)
def test_an_endpoint_on_a_dashboard_answering_the_wrong_shape_waits_and_retries(h: Harness, dashboard: FakeRayDashboard, shape: Any) -> None:
    dashboard.wrong_shape.append(shape)
    _endpoint(h)
    assert h.ctl.loop.reconcile_endpoint(NS, "ep") == RETRY_SECONDS
    assert condition(_endpoint_status(h), RECONCILED) == {}


def test_an_empty_object_is_an_answer_the_loop_works_with(h: Harness, dashboard: FakeRayDashboard) -> None:
    dashboard.wrong_shape.append({})
    h.apply("shared", runtime={"cluster": {"name": "shared"}})
    _endpoint(h)
    assert h.reconcile("shared") is not None and h.ctl.loop.reconcile_endpoint(NS, "ep") is not None
    assert condition(h.status("shared"), RECONCILED) == {} and condition(_endpoint_status(h), RECONCILED) == {}


@pytest.mark.parametrize("shape", SERVE_SHAPES, ids=repr)
def test_the_orphan_sweep_of_a_dashboard_answering_the_wrong_shape_skips_it(dashboard: FakeRayDashboard, shape: Any) -> None:
    dashboard.wrong_shape.append(shape)
    sweeper = Sweeper(OperatorSettings(), [NS])
    sweeper.known.add(dashboard.url)
    assert sweeper.run([], [], 0.0) == []
