"""graft.jobs end to end on a real local Ray: Train + Tune + DeepSpeed + real MiniLM, then export."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from graft.api import FineTuneJob
from graft.jobs.deepspeed_config import cpu_bf16_is_fast, cpu_has_native_bf16
from graft.jobs.entrypoint import RESULT_FILE, read_result, run_job
from graft.jobs.events import JobEvent, PhaseEvent, TrialEpochEvent
from testbed.jobdocs import tiny_job

pytestmark = pytest.mark.e2e


def test_run_job_exports_a_model_that_loads_with_label_names(ray_cluster: dict, minilm_path: Path, sentiment_jsonl: Path, tmp_path: Path) -> None:
    from transformers import AutoModelForSequenceClassification

    job = FineTuneJob.model_validate(tiny_job(minilm_path, sentiment_jsonl, name="single", training={"epochs": 2}))
    events: list[JobEvent] = []

    result = run_job(job, tmp_path / "run", on_event=events.append)

    assert result.status == "succeeded", result.message
    assert result.label_names == ["negative", "positive"]
    assert result.best_trial_id and result.model_uri and result.checkpoint_uri
    assert set(result.best_metrics) == {"train_loss", "eval_loss", "eval_accuracy", "eval_f1"}
    assert result.best_score == result.best_metrics["eval_accuracy"]
    assert [t.epochs_completed for t in result.trials] == [2]
    assert [h.epoch for h in result.trials[0].history] == [1, 2]
    assert {"preflight", "loading", "tuning", "exporting"} <= set(result.phase_seconds)
    on_disk = read_result(tmp_path / "run" / RESULT_FILE)
    assert on_disk.best_trial_id == result.best_trial_id
    model = AutoModelForSequenceClassification.from_pretrained(result.model_uri)
    assert model.config.id2label == {0: "negative", 1: "positive"}
    assert (Path(result.model_uri) / "model.safetensors").is_file()
    assert (Path(result.model_uri) / "tokenizer.json").is_file()
    assert json.loads((Path(result.model_uri) / "graft_export.json").read_text())["trial_id"] == result.best_trial_id
    assert [e.phase for e in events if isinstance(e, PhaseEvent)] == ["preflight", "loading", "tuning", "exporting", "done"]
    assert [e.epoch for e in events if isinstance(e, TrialEpochEvent)] == [1, 2]
    auto = "bf16" if cpu_bf16_is_fast() else "fp32"  # precision: auto on this CPU
    assert (result.precision, result.trials[0].precision) == (auto, auto)


def test_an_explicit_bf16_trains_in_bf16_and_warns_where_the_cpu_emulates_it(
    ray_cluster: dict, minilm_path: Path, sentiment_jsonl: Path, tmp_path: Path,
) -> None:
    """The one test that asks for bf16 by name: two steps, so an emulating CPU (~55x slower) stays quick."""
    spec = tiny_job(minilm_path, sentiment_jsonl, name="bf16", training={"precision": "bf16", "maxStepsPerEpoch": 2, "maxSeqLength": 16})
    events: list[JobEvent] = []

    result = run_job(FineTuneJob.model_validate(spec), tmp_path / "run", on_event=events.append)

    assert result.status == "succeeded", result.message
    assert (result.precision, result.trials[0].precision) == ("bf16", "bf16")
    (loading,) = [e for e in events if isinstance(e, PhaseEvent) and e.phase == "loading"]
    assert ("bf16 on this CPU is emulated" in loading.message) == (not cpu_has_native_bf16()), loading.message


def test_a_failing_trial_writes_a_failed_result_naming_the_error_then_raises(ray_cluster: dict, minilm_path: Path, sentiment_jsonl: Path, tmp_path: Path) -> None:
    import shutil

    from graft.jobs.entrypoint import TrainingFailed

    broken = tmp_path / "config-only-model"
    broken.mkdir()
    shutil.copy(minilm_path / "config.json", broken / "config.json")  # passes preflight, has no weights
    job = FineTuneJob.model_validate(tiny_job(broken, sentiment_jsonl, name="broken"))

    with pytest.raises(TrainingFailed) as info:
        run_job(job, tmp_path / "run")

    on_disk = read_result(tmp_path / "run" / RESULT_FILE)
    assert on_disk.status == "failed" and info.value.result.status == "failed"
    assert [t.status for t in on_disk.trials] == ["failed"]
    assert on_disk.trials[0].error and on_disk.trials[0].error != "trial failed (no error recorded)"
    assert on_disk.message.startswith("every trial failed")
    assert on_disk.model_uri is None


def test_lora_on_zero3_with_two_workers_exports_merged_plain_weights(ray_cluster: dict, minilm_path: Path, sentiment_jsonl: Path, tmp_path: Path) -> None:
    import torch
    from safetensors.torch import load_file
    from transformers import AutoModelForSequenceClassification

    job = FineTuneJob.model_validate(
        tiny_job(
            minilm_path, sentiment_jsonl, name="lora",
            training={"maxStepsPerEpoch": 2, "deepspeed": {"zeroStage": 3}, "lora": {"r": 4, "alpha": 8}},
            resources={"workers": 2, "cpusPerWorker": 1},
        )
    )

    result = run_job(job, tmp_path / "run")

    assert result.status == "succeeded", result.message
    exported = load_file(str(Path(result.model_uri) / "model.safetensors"))
    assert not [k for k in exported if "lora_" in k or "base_model" in k]  # adapters merged into plain weights
    base = load_file(str(minilm_path / "model.safetensors"))
    key = next(k for k in exported if k.endswith("encoder.layer.0.attention.self.query.weight"))
    base_key = next(k for k in base if k.endswith("encoder.layer.0.attention.self.query.weight"))
    assert not torch.equal(exported[key], base[base_key].float())  # the LoRA update is in the query weights
    model = AutoModelForSequenceClassification.from_pretrained(result.model_uri)
    assert model.config.id2label == {0: "negative", 1: "positive"}
