"""The result contract between graft.jobs (writer) and the operator (reader), without Ray."""

from __future__ import annotations

from pathlib import Path

import fsspec
import pytest

from graft.api.result import TrainingResult
from graft.jobs.__main__ import publish_result
from graft.operator.result import read_result_file, result_from_log

pytestmark = pytest.mark.unit


def a_result() -> TrainingResult:
    return TrainingResult(
        job_name="demo",
        status="succeeded",
        metric="eval_accuracy",
        mode="max",
        best_trial_id="t1",
        best_score=0.91,
        model_uri="/models/demo",
        started_at="2026-11-29T00:00:00Z",
        finished_at="2026-11-29T00:05:00Z",
    )


def produced(tmp_path: Path) -> Path:
    path = tmp_path / "result.json"
    path.write_text(a_result().model_dump_json(by_alias=True, indent=2))
    return path


def test_result_written_to_an_object_store_uri_is_read_back_by_the_operator(tmp_path: Path) -> None:
    uri = "memory://bucket/demo-1234/result.json"
    publish_result(produced(tmp_path), uri, None)
    assert read_result_file(uri) == a_result()
    fsspec.filesystem("memory").rm(uri)


def test_result_copied_to_a_local_path(tmp_path: Path) -> None:
    target = tmp_path / "shared" / "result.json"
    publish_result(produced(tmp_path), str(target), target)
    assert TrainingResult.model_validate_json(target.read_text()) == a_result()


def test_result_log_line_is_parsed_by_the_operator(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    publish_result(produced(tmp_path), str(tmp_path / "result.json"), tmp_path / "result.json")
    log = "[graft] phase done\n" + capsys.readouterr().out
    assert result_from_log(log) == a_result()
