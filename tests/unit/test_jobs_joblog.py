"""job.log: the job's own lines on storage, carried over by a later attempt, never fatal."""

from __future__ import annotations

from pathlib import Path

import pytest

from graft.jobs.joblog import JobLog

pytestmark = pytest.mark.unit


def test_lines_reach_the_file_on_flush_and_a_later_attempt_appends(tmp_path: Path) -> None:
    uri = str(tmp_path / "job" / "job.log")
    first = JobLog(uri, interval_s=3600)
    first.add("[graft] phase preflight")
    first.flush()

    second = JobLog(uri, interval_s=3600)
    second.add("[graft] attempt 2 resumes the experiment")
    second.flush()

    assert Path(uri).read_text().splitlines() == ["[graft] phase preflight", "[graft] attempt 2 resumes the experiment"]


def test_an_unwritable_log_is_reported_once_and_does_not_raise(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "file").write_text("x")
    log = JobLog(str(tmp_path / "file" / "job.log"), interval_s=0)  # a directory that is a file
    log.add("a")
    log.add("b")
    assert capsys.readouterr().err.count("cannot keep the job log") == 1

