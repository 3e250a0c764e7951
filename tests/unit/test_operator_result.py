"""How the training result reaches the operator: a file on storage, else a marked job-log line."""

from __future__ import annotations

from pathlib import Path

import pytest

from graft.api import TrainingResult
from graft.operator.result import (
    RESULT_MARKER,
    ResultSource,
    ResultUnavailable,
    read_result,
    result_from_log,
    result_uri,
)

pytestmark = pytest.mark.unit

RESULT = TrainingResult(job_name="demo", status="succeeded", metric="eval_accuracy", mode="max", best_score=0.9,
                        model_uri="/m", started_at="a", finished_at="b")


def test_result_uri_is_per_job_instance() -> None:
    assert result_uri("s3://b/runs/", "team-a", "demo", "abcdef123456") == "s3://b/runs/team-a/demo-abcdef12/result.json"
    assert result_uri(None, "team-a", "demo", "abc") is None


def test_result_file_on_storage_is_read(tmp_path: Path) -> None:
    uri = result_uri(str(tmp_path), "team-a", "demo", "abcdef123456")
    assert uri is not None
    Path(uri).parent.mkdir(parents=True)
    Path(uri).write_text(RESULT.model_dump_json(by_alias=True))
    assert read_result(ResultSource(uri=uri, dashboard_url=None, job_id=None)) == RESULT


def test_missing_result_file_says_where_it_looked(tmp_path: Path) -> None:
    with pytest.raises(ResultUnavailable, match="result.json does not exist"):
        read_result(ResultSource(uri=str(tmp_path / "result.json"), dashboard_url=None, job_id=None))


def test_last_marked_log_line_wins() -> None:
    first = RESULT.model_copy(update={"best_score": 0.1}).model_dump_json(by_alias=True)
    log = f"noise\n{RESULT_MARKER}{first}\nmore\n(raylet) {RESULT_MARKER}{RESULT.model_dump_json(by_alias=True)}\n"
    assert result_from_log(log) == RESULT
    assert result_from_log("no result here") is None


def test_malformed_result_is_reported_not_trusted(tmp_path: Path) -> None:
    bad = tmp_path / "result.json"
    bad.write_text('{"kind": "TrainingResult"}')
    with pytest.raises(ResultUnavailable, match="is not a TrainingResult"):
        read_result(ResultSource(uri=str(bad), dashboard_url=None, job_id=None))
