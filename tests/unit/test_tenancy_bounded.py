"""Operator-wide denial of service (issue 8 item 12): every read of tenant-controlled output is bounded."""

from __future__ import annotations

import http.server
import json
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from graft.api.result import TrainingResult, TrialRecord
from graft.operator.backends.base import RunObservation, RunState
from graft.operator.bounded import TooLarge, get_json
from graft.operator.result import MAX_RESULT_BYTES, ResultUnavailable, read_result_file, read_result_from_dashboard
from graft.operator.shared.jobs import ClusterUnavailable, RayJobs
from graft.operator.status import MAX_TRIALS_IN_STATUS, JobObservation, compute_status

pytestmark = [pytest.mark.unit, pytest.mark.tenancy]

HUGE = 17 * 1024 * 1024


class Huge(http.server.BaseHTTPRequestHandler):
    """A dashboard whose job printed more than the operator may read (streamed, never built whole)."""

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(b'{"logs": "')
        chunk = b"x" * 65536
        for _ in range(HUGE // len(chunk)):
            self.wfile.write(chunk)
        self.wfile.write(b'"}')

    def log_message(self, *_: object) -> None:
        pass


@pytest.fixture
def huge_dashboard() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Huge)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_a_huge_response_stops_being_read_at_the_limit(huge_dashboard: str) -> None:
    with pytest.raises(TooLarge):
        get_json(f"{huge_dashboard}/api/jobs/x/logs", 1024 * 1024, timeout=30)


def test_a_huge_job_log_is_refused_not_read_whole(huge_dashboard: str) -> None:
    with pytest.raises(ClusterUnavailable, match="more than"):
        RayJobs(huge_dashboard).logs("x")
    with pytest.raises(ResultUnavailable, match="more than"):
        read_result_from_dashboard(huge_dashboard, "x")


def test_a_huge_result_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "result.json"
    path.write_bytes(b" " * (MAX_RESULT_BYTES + 10))
    with pytest.raises(ResultUnavailable, match="larger than"):
        read_result_file(str(path))


def test_status_holds_a_bounded_number_of_trials() -> None:
    trials = [TrialRecord(trial_id=f"t{i}", status="completed", config={"learningRate": 1e-4}, epochs_completed=1, best_score=0.5) for i in range(3000)]
    res = TrainingResult(job_name="j", status="succeeded", metric="eval_accuracy", mode="max", best_score=0.9,
                         best_trial_id="t1", model_uri="/m", trials=trials, started_at="2026-01-01T00:00:00Z",
                         finished_at="2026-01-01T00:00:01Z")
    run = RunObservation(RunState.SUCCEEDED, "JobSucceeded", "the Ray job succeeded")
    st = compute_status(None, JobObservation(generation=1, run=run, result=res), datetime.now(UTC))
    assert len(st.trials) == MAX_TRIALS_IN_STATUS and "trials" not in (st.result or {})
    assert len(json.dumps(st.model_dump(mode="json"))) < 64 * 1024
