"""The shared-cluster example, applied in team-a as its header says, is admitted by an operator with a
storage volume: its checkpoint storage is team-a's own part of the volume, not another namespace's."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from graft.api.spec import FineTuneJob
from graft.operator.admission import AdmissionContext, admit_job
from graft.operator.settings import OperatorSettings
from graft.operator.storage import job_dir

pytestmark = [pytest.mark.unit, pytest.mark.tenancy]

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "finetune-shared-cluster.yaml"
PVC = OperatorSettings(storage_pvc="graft-storage", storage_mount_path="/mnt/graft", result_storage="/mnt/graft", require_policy=False)


def _example_in(namespace: str) -> FineTuneJob:
    doc = yaml.safe_load(EXAMPLE.read_text())
    doc["metadata"] |= {"namespace": namespace, "uid": "0123456789abcdef"}
    return FineTuneJob.model_validate(doc)


def test_the_shared_cluster_example_is_admitted_in_team_a_and_writes_inside_team_a_s_part() -> None:
    job = _example_in("team-a")
    adm = admit_job(job, AdmissionContext({"kubernetes.io/metadata.name": "team-a"}, [], 0, PVC))
    assert adm.allowed, adm.violations
    assert (job_dir(job, PVC) or "").startswith("/mnt/graft/team-a/")
