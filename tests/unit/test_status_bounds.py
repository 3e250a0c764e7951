"""Everything written to status is bounded (issue 21, finding 8): a job whose result holds thousands
of long labels, metric names or trials still gets a status far below etcd's object limit, which
says what it left out; the full result stays on storage."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest

from graft.api.result import DistillationReport, TrainingResult, TrialRecord
from graft.api.status import MAX_STATUS_ITEMS, MAX_STATUS_STRING, STATUS_BUDGET_BYTES, Admitted, FineTuneJobStatus, bound_status
from graft.operator.backends.base import RunObservation, RunState
from graft.operator.objects import known
from graft.operator.status import JobObservation, compute_status, status_patch

pytestmark = [pytest.mark.unit, pytest.mark.tenancy]

NOW = datetime(2026, 1, 1, tzinfo=UTC)
SUCCEEDED = RunObservation(RunState.SUCCEEDED, "JobSucceeded", "the Ray job succeeded")
LONG = "x" * 1000


def _result(**fields: Any) -> TrainingResult:
    base: dict[str, Any] = {"job_name": "j", "status": "succeeded", "metric": "eval_accuracy", "mode": "max", "best_score": 0.9,
                            "best_trial_id": "t1", "model_uri": "s3://b/team-a/j-0123abcd/model",
                            "started_at": "2026-01-01T00:00:00Z", "finished_at": "2026-01-01T00:00:01Z"}
    return TrainingResult(**(base | fields))


def _written(result: TrainingResult, server: dict[str, Any] | None = None) -> dict[str, Any]:
    """The status document one pass writes for a succeeded job with `result` (merged onto `server`)."""
    prev = FineTuneJobStatus.model_validate(known(FineTuneJobStatus, server)) if server else None
    st = compute_status(prev, JobObservation(generation=1, run=SUCCEEDED, result=result), NOW)
    patch = status_patch(server, st)
    return {k: v for k, v in ((server or {}) | patch).items() if v is not None}


def _size(doc: dict[str, Any]) -> int:
    return len(json.dumps(doc, separators=(",", ":")))


def test_ten_thousand_labels_of_a_thousand_characters_fit_the_budget_and_are_named_as_left_out() -> None:
    status = _written(_result(label_names=[f"{i}-{LONG}" for i in range(10_000)]))
    assert _size(status) < STATUS_BUDGET_BYTES
    assert len(status["result"]["labelNames"]) == MAX_STATUS_ITEMS
    assert any(n.startswith("result.labelNames: 9900 of 10000 items left out") for n in status["omitted"])
    assert status["phase"] == "Succeeded" and status["modelUri"] == "s3://b/team-a/j-0123abcd/model"


def test_long_metric_names_many_trials_and_a_long_message_fit_the_budget() -> None:
    trials = [TrialRecord(trial_id=f"t{i}-{LONG}", status="completed", config={"lr": 1e-4}, epochs_completed=1) for i in range(5000)]
    status = _written(_result(best_metrics={f"m{i}-{LONG}": 0.5 for i in range(10_000)}, trials=trials, message="y" * 1_000_000,
                              phase_seconds={f"p{i}-{LONG}": 1.0 for i in range(10_000)}))
    assert _size(status) < STATUS_BUDGET_BYTES
    assert len(status["result"]["message"]) <= MAX_STATUS_STRING and status["result"]["message"].endswith("characters, cut]")
    assert any(n.startswith("result.bestMetrics: 9900 of 10000 entries left out") for n in status["omitted"])


def test_a_result_over_the_budget_keeps_what_the_operator_acts_on_and_points_at_storage() -> None:
    label = "z" * (MAX_STATUS_STRING * 2)
    status = _written(_result(label_names=[label] * 10_000, best_config={f"k{i}": label for i in range(1000)}))
    assert _size(status) < STATUS_BUDGET_BYTES
    assert status["result"]["labelNames"] == [] and status["result"]["modelUri"] == "s3://b/team-a/j-0123abcd/model"
    assert any("result.json on the job's storage" in n for n in status["omitted"])
    TrainingResult.model_validate(status["result"])  # the loop reads it back for promotion


def test_a_bounded_status_is_written_once_and_then_left_alone() -> None:
    result = _result(label_names=[f"{i}-{LONG}" for i in range(10_000)], message="y" * 100_000)
    first = _written(result)
    again = TrainingResult.model_validate(first["result"])  # what the next pass reads from the status
    prev = FineTuneJobStatus.model_validate(known(FineTuneJobStatus, first))
    st = compute_status(prev, JobObservation(generation=1, run=SUCCEEDED, result=again), NOW)
    assert status_patch(first, st) == {}


def test_a_result_cut_to_its_core_still_reads_back_and_is_written_once() -> None:
    report = DistillationReport(teacher="t" * 10_000, teacher_parameters=1, student_parameters=1, teacher_accuracy=0.9,
                                student_accuracy=0.8, teacher_ms_per_image=1.0, student_ms_per_image=0.5)
    first = _written(_result(label_names=["z" * MAX_STATUS_STRING] * 1000, distillation=report))
    assert "distillation" not in first["result"]
    again = TrainingResult.model_validate(first["result"])
    prev = FineTuneJobStatus.model_validate(known(FineTuneJobStatus, first))
    assert status_patch(first, compute_status(prev, JobObservation(generation=1, run=SUCCEEDED, result=again), NOW)) == {}


def test_what_admission_decided_is_never_cut() -> None:
    refs = {f"spec.field{i}": f"s3://b/{i}" for i in range(MAX_STATUS_ITEMS + 5)}
    st = FineTuneJobStatus(admitted=Admitted(references=refs), message="m" * (MAX_STATUS_STRING + 1))
    doc = bound_status(st.to_wire())
    assert doc["admitted"]["references"] == refs and len(doc["message"]) == MAX_STATUS_STRING


def test_a_result_cut_to_its_core_names_where_the_full_result_is() -> None:
    uri = "s3://b/team-a/j-0123abcd/result.json"
    label = "z" * (MAX_STATUS_STRING * 2)
    result = _result(label_names=[label] * 10_000, best_config={f"k{i}": label for i in range(1000)})
    st = compute_status(None, JobObservation(generation=1, run=SUCCEEDED, result=result, result_uri=uri), NOW)
    status = status_patch(None, st)
    assert status["resultUri"] == uri
    assert any(n.startswith("result: only its core fields are kept") and n.endswith(f"the full result is {uri}") for n in status["omitted"])
