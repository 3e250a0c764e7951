"""What one Train worker asks Ray for: resources.memoryPerWorker is a Ray `memory` reservation except
in a RayJob, whose worker pods are sized by it."""

from __future__ import annotations

import pytest

from graft.api.spec import WORKER_POD_RESOURCE, FineTuneJob, FineTuneJobSpec
from graft.jobs.tune import worker_resources

pytestmark = pytest.mark.unit


def spec(**resources: object) -> FineTuneJobSpec:
    return FineTuneJobSpec.model_validate({"model": {"source": "m"}, "dataset": {"source": "d"}, "resources": resources})


def test_memory_per_worker_is_reserved_in_bytes_with_graft_run_and_shared_clusters() -> None:
    assert worker_resources(spec(cpusPerWorker=2, memoryPerWorker="2Gi"), pod_sized=False) == {"CPU": 2, "memory": 2 * 2**30}


def test_in_a_pod_sized_rayjob_a_worker_takes_its_pods_slot_instead_of_memory() -> None:
    assert worker_resources(spec(memoryPerWorker="2Gi", cpusPerWorker=0.5), pod_sized=True) == {"CPU": 0.5, WORKER_POD_RESOURCE: 1}


def test_rayjob_worker_pods_advertise_the_one_slot_workers_take() -> None:
    from graft.operator.builders import build_rayjob
    from graft.operator.settings import OperatorSettings

    job = FineTuneJob.model_validate({"metadata": {"name": "j", "namespace": "n", "uid": "0123456789"}, "spec": {
        "model": {"source": "m"}, "dataset": {"source": "d"}, "checkpoints": {"storage": "s3://b/r"},
        "resources": {"workers": 2, "cpusPerWorker": 0.5}}})
    (group,) = build_rayjob(job, OperatorSettings())["spec"]["rayClusterSpec"]["workerGroupSpecs"]
    assert group["resources"] == {WORKER_POD_RESOURCE: "1"} and group["replicas"] == 2


def test_gpus_are_asked_for_only_when_given() -> None:
    assert worker_resources(spec(gpusPerWorker=1), pod_sized=False) == {"CPU": 1, "GPU": 1}
    assert "GPU" not in worker_resources(spec(), pod_sized=False)
