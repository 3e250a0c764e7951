"""`graft logs` (graft.cli.logs): the live log through the Ray dashboard while the cluster has the
job, else the copy on storage (status.logUri), also after the Ray cluster is gone. The FineTuneJob
comes from a fake `kubectl` on PATH; the dashboard is either a closed loopback port or a fake one."""

from __future__ import annotations

import json
import socket
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from graft.cli.main import main
from graft.jobs.joblog import JobLog
from tests.unit.fake_ray_dashboard import FakeRayDashboard

pytestmark = pytest.mark.unit

NS, NAME, SID = "team-a", "demo", "graft.team-a.demo.01234567"
STORED = "[graft] phase preparing\n[graft] trial t1 epoch 1/2: eval_accuracy=0.7\n[graft] trial t1 epoch 2/2: eval_accuracy=0.8\n"


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


GONE = f"http://127.0.0.1:{_closed_port()}"  # the Ray cluster that ran the job is gone: nothing listens


class Kubectl:
    """A `kubectl` on PATH that answers `get finetunejob` with the job the test set (or an error), and
    `get secret` with the Secret the test set (else Forbidden, as for a user who may not read Secrets)."""

    def __init__(self, bin_dir: Path) -> None:
        self.dir = bin_dir
        bin_dir.mkdir()
        script = bin_dir / "kubectl"
        script.write_text(
            '#!/bin/sh\nd="$(dirname "$0")"\nprintf "%s\\n" "$*" >> "$d/argv"\n'
            'case "$*" in *" get secret "*) if [ -f "$d/secret.json" ]; then cat "$d/secret.json"; exit 0; fi\n'
            '  echo "Error from server (Forbidden): secrets is forbidden" >&2; exit 1;; esac\n'
            'if [ -f "$d/stderr" ]; then cat "$d/stderr" >&2; exit 1; fi\ncat "$d/job.json"\n'
        )
        script.chmod(script.stat().st_mode | stat.S_IXUSR)

    def job(self, **status: Any) -> None:
        doc = {"apiVersion": "graft.dev/v1alpha1", "kind": "FineTuneJob",
               "metadata": {"name": NAME, "namespace": NS}, "spec": {}, "status": status}
        (self.dir / "job.json").write_text(json.dumps(doc))

    def secret(self, name: str, data: dict[str, str]) -> None:
        """The Secret `get secret NAME` answers (data values base64-encoded already)."""
        doc = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name, "namespace": NS}, "data": data}
        (self.dir / "secret.json").write_text(json.dumps(doc))

    def fail(self, stderr: str) -> None:
        (self.dir / "stderr").write_text(stderr)

    @property
    def argv(self) -> list[str]:
        return (self.dir / "argv").read_text().splitlines()


@pytest.fixture
def kubectl(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Kubectl:
    k = Kubectl(tmp_path / "bin")
    monkeypatch.setenv("PATH", f"{k.dir}:/usr/bin:/bin")
    return k


@pytest.fixture
def dashboard() -> Iterator[FakeRayDashboard]:
    with FakeRayDashboard() as d:
        yield d


def _stored_copy(tmp_path: Path, text: str = STORED) -> str:
    path = tmp_path / "storage" / NS / f"{NAME}-01234567" / "train.log"
    path.parent.mkdir(parents=True)
    path.write_text(text)
    return str(path)


def _logs(capsys: pytest.CaptureFixture[str], *extra: str) -> tuple[int, str, str]:
    code = main(["logs", NAME, "-n", NS, *extra])
    out, err = capsys.readouterr()
    return code, out, err


def test_with_the_cluster_gone_the_stored_copy_is_printed(tmp_path: Path, kubectl: Kubectl, capsys: pytest.CaptureFixture[str]) -> None:
    kubectl.job(phase="Succeeded", jobSubmissionId=SID, dashboardUrl=GONE, logUri=_stored_copy(tmp_path))
    assert _logs(capsys) == (0, STORED, "")
    # The job, then the Ray token Secret (the user may not read it here: the dashboard is asked without).
    assert kubectl.argv == [f"-n {NS} get finetunejob {NAME} -o json", f"-n {NS} get secret {NAME}-ray-auth -o json"]


def test_the_job_log_graft_jobs_kept_on_storage_is_what_is_printed(tmp_path: Path, kubectl: Kubectl, capsys: pytest.CaptureFixture[str]) -> None:
    uri = str(tmp_path / "job.log")
    log = JobLog(uri, interval_s=3600)
    for line in STORED.splitlines():
        log.add(line)
    log.flush()
    JobLog(uri).add("[graft] attempt 2 resumed")  # a later attempt appends (flushes at once: interval passed)
    kubectl.job(phase="Failed", jobSubmissionId=SID, dashboardUrl=GONE, logUri=uri)
    assert _logs(capsys) == (0, STORED + "[graft] attempt 2 resumed\n", "")


def test_tail_prints_only_the_last_lines_of_the_stored_copy(tmp_path: Path, kubectl: Kubectl, capsys: pytest.CaptureFixture[str]) -> None:
    kubectl.job(phase="Succeeded", jobSubmissionId=SID, dashboardUrl=GONE, logUri=_stored_copy(tmp_path))
    code, out, _ = _logs(capsys, "--tail", "2")
    assert code == 0 and out == "".join(STORED.splitlines(keepends=True)[-2:])


def test_a_cluster_that_no_longer_knows_the_job_falls_back_to_the_stored_copy(
        tmp_path: Path, kubectl: Kubectl, dashboard: FakeRayDashboard, capsys: pytest.CaptureFixture[str]) -> None:
    kubectl.job(phase="Succeeded", jobSubmissionId=SID, dashboardUrl=dashboard.url, logUri=_stored_copy(tmp_path))
    assert _logs(capsys) == (0, STORED, "")
    assert dashboard.requests("GET") == [f"/api/jobs/{SID}"]  # asked, got 404, did not ask for its log


def test_the_live_log_is_read_while_the_cluster_still_has_the_job(
        tmp_path: Path, kubectl: Kubectl, dashboard: FakeRayDashboard, capsys: pytest.CaptureFixture[str]) -> None:
    dashboard.add(SID, "RUNNING", logs="live line 1\nlive line 2\n")
    kubectl.job(phase="Running", jobSubmissionId=SID, dashboardUrl=dashboard.url, logUri=_stored_copy(tmp_path, "old copy\n"))
    assert _logs(capsys) == (0, "live line 1\nlive line 2\n", "")


def test_an_empty_live_log_falls_back_to_the_stored_copy(
        tmp_path: Path, kubectl: Kubectl, dashboard: FakeRayDashboard, capsys: pytest.CaptureFixture[str]) -> None:
    dashboard.add(SID, "SUCCEEDED", logs="")
    kubectl.job(phase="Succeeded", jobSubmissionId=SID, dashboardUrl=dashboard.url, logUri=_stored_copy(tmp_path))
    assert _logs(capsys) == (0, STORED, "")


def test_dashboard_flag_reads_through_a_port_forward_instead_of_the_in_cluster_address(
        kubectl: Kubectl, dashboard: FakeRayDashboard, capsys: pytest.CaptureFixture[str]) -> None:
    dashboard.add(SID, "RUNNING", logs="through the port-forward\n")
    kubectl.job(phase="Running", jobSubmissionId=SID, dashboardUrl=GONE)
    assert _logs(capsys, "--dashboard", dashboard.url.removeprefix("http://")) == (0, "through the port-forward\n", "")


def test_without_a_readable_copy_the_error_names_the_dashboard_the_copy_and_a_port_forward(
        tmp_path: Path, kubectl: Kubectl, capsys: pytest.CaptureFixture[str]) -> None:
    missing = str(tmp_path / "nowhere" / "train.log")
    kubectl.job(phase="Failed", jobSubmissionId=SID, dashboardUrl=GONE, logUri=missing, rayClusterName="demo-raycluster")
    code, out, err = _logs(capsys)
    assert code == 1 and out == ""
    assert f"no log for FineTuneJob {NS}/{NAME}" in err
    assert f"cannot reach the Ray dashboard at {GONE}" in err
    assert f"the log copy {missing} is not readable from here" in err
    assert f"kubectl -n {NS} port-forward svc/demo-raycluster-head-svc 8265" in err


def test_a_job_that_never_started_says_so(kubectl: Kubectl, capsys: pytest.CaptureFixture[str]) -> None:
    kubectl.job(phase="Pending", message="waiting for admission")
    code, _, err = _logs(capsys)
    assert code == 1 and "no Ray job yet (phase Pending: waiting for admission)" in err


def test_a_job_kubectl_cannot_find_gets_a_namespace_hint(kubectl: Kubectl, capsys: pytest.CaptureFixture[str]) -> None:
    kubectl.fail(f'Error from server (NotFound): finetunejobs.graft.dev "{NAME}" not found\n')
    code, _, err = _logs(capsys)
    assert code == 1 and "(check -n NAMESPACE)" in err and "NotFound" in err
