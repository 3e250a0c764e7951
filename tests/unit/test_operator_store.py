"""The operator's store keeps what reconciles read, not whole objects."""

from __future__ import annotations

from typing import Any

import pytest

from graft.operator import kube as k
from graft.operator.backends.rayjob import observe_rayjob
from graft.operator.cache import Store

pytestmark = pytest.mark.unit

MANAGED = [{"manager": "graft-operator", "operation": "Update", "fieldsV1": {"f:status": {"f:phase": {}}}}]


def _rayjob(suspend: bool, rv: str = "5") -> dict[str, Any]:
    return {
        "apiVersion": "ray.io/v1", "kind": "RayJob",
        "metadata": {"name": "ftj-a", "namespace": "team-a", "resourceVersion": rv, "labels": {"graft.dev/finetunejob": "a"},
                     "annotations": {"graft.dev/spec-hash": "abc"}, "managedFields": MANAGED},
        "spec": {"suspend": suspend, "entrypoint": "python -m graft.jobs", "rayClusterSpec": {"headGroupSpec": {"template": {"spec": {}}}}},
        "status": {"jobDeploymentStatus": "Running", "jobStatus": "RUNNING", "rayClusterName": "ftj-a-x"},
    }


def test_a_stored_rayjob_keeps_metadata_suspend_and_status_only() -> None:
    stored = Store().put(k.RAYJOBS, _rayjob(suspend=True))
    assert stored["spec"] == {"suspend": True}
    assert "managedFields" not in stored["metadata"]
    assert stored["metadata"]["annotations"] == {"graft.dev/spec-hash": "abc"}
    assert stored["status"]["rayClusterName"] == "ftj-a-x"


def test_a_trimmed_rayjob_is_observed_as_the_whole_one() -> None:
    whole = _rayjob(suspend=False)
    assert observe_rayjob(Store().put(k.RAYJOBS, whole), suspend=False) == observe_rayjob(whole, suspend=False)


def test_a_stored_finetunejob_keeps_its_spec_and_loses_managed_fields() -> None:
    job = {"metadata": {"name": "a", "namespace": "team-a", "resourceVersion": "3", "managedFields": MANAGED},
           "spec": {"model": {"source": "/m"}}, "status": {"phase": "Running"}}
    stored = Store().put(k.FINETUNEJOBS, job)
    assert stored["spec"] == job["spec"] and stored["status"] == job["status"]
    assert "managedFields" not in stored["metadata"]
    assert "managedFields" in job["metadata"]  # the caller's object is left as it was


def test_an_older_version_does_not_replace_a_newer_one() -> None:
    store = Store()
    store.put(k.RAYJOBS, _rayjob(suspend=False, rv="9"))
    store.put(k.RAYJOBS, _rayjob(suspend=True, rv="4"))
    assert store.get(k.RAYJOBS, "team-a", "ftj-a")["spec"] == {"suspend": False}  # type: ignore[index]
