"""`python -m graft.jobs`: spec documents, and a spec that cannot run exits 2 before Ray starts."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from graft.jobs.__main__ import load_job_document, log_event
from graft.jobs.events import TrialEpochEvent

pytestmark = pytest.mark.unit


def test_a_whole_finetunejob_document_loads(tmp_path: Path) -> None:
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump({"kind": "FineTuneJob", "metadata": {"name": "demo"}, "spec": {"model": {"source": "m"}, "dataset": {"source": "d.csv"}}}))
    job = load_job_document(path)
    assert job.metadata.name == "demo" and job.spec.model.source == "m"


def test_a_bare_spec_json_loads_with_the_name_from_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GRAFT_JOB_NAME", "from-env")
    path = tmp_path / "spec.json"
    path.write_text(json.dumps({"model": {"source": "m"}, "dataset": {"source": "d.csv"}}))
    job = load_job_document(path)
    assert job.metadata.name == "from-env" and job.spec.dataset.source == "d.csv"


def test_unrunnable_spec_exits_2_naming_the_problem_without_starting_ray(tmp_path: Path) -> None:
    spec = tmp_path / "job.yaml"
    spec.write_text(yaml.safe_dump({"metadata": {"name": "x"}, "spec": {"model": {"source": str(tmp_path / "no-model")}, "dataset": {"source": str(tmp_path / "no.csv")}}}))
    out = subprocess.run(
        [sys.executable, "-m", "graft.jobs", "--spec", str(spec), "--result", str(tmp_path / "result.json")],
        capture_output=True, text=True, timeout=120,
    )
    assert out.returncode == 2
    assert "spec.model.source" in out.stderr and "spec.dataset.source" in out.stderr
    assert "Started a local Ray" not in out.stderr + out.stdout
    assert not (tmp_path / "result.json").exists()


def test_epoch_events_log_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    log_event(TrialEpochEvent(trial_id="t1", epoch=1, epochs=2, metrics={"eval_accuracy": 0.75}, config={}))
    assert capsys.readouterr().out == "[graft] trial t1 epoch 1/2 eval_accuracy=0.7500\n"
