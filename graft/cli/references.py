"""`graft run`'s side of `finetunejob://NAME` (graft.api.references): the model of the newest
succeeded run of NAME under the runs directory, `runs/NAME/` or the default `runs/NAME-TIME/`."""

from __future__ import annotations

from pathlib import Path

from pydantic import ValidationError

from graft.api.errors import FieldError, SpecError
from graft.api.references import SCHEME, Unresolved, model_of, references, with_resolved
from graft.api.result import TrainingResult
from graft.api.spec import FineTuneJob
from graft.storage import RESULT_FILE, is_remote


def _results(runs: Path, name: str) -> list[tuple[TrainingResult, Path]]:
    """The readable result documents of NAME's runs under `runs`, each with its run directory."""
    found: list[tuple[TrainingResult, Path]] = []
    dirs = [runs / name, *sorted(runs.glob(f"{name}-*"))]
    for d in dirs:
        path = d / RESULT_FILE
        if not path.is_file():
            continue
        try:
            result = TrainingResult.model_validate_json(path.read_text())
        except (ValidationError, OSError, UnicodeDecodeError):
            continue  # not a result of this Graft (or being written): not a run to start from
        if result.job_name == name:
            found.append((result, d))
    return found


def run_model(field: str, name: str, runs: Path) -> str:
    """The exported model of the newest succeeded run of `name` under `runs` (by finish time).
    Raises Unresolved when there is none, naming the command that makes one."""
    found = _results(runs, name)
    succeeded = sorted(((r, d) for r, d in found if r.status == "succeeded" and r.model_uri), key=lambda rd: rd[0].finished_at)
    if succeeded:
        best, run = succeeded[-1]
        # A local model must be the run's own (a result.json under runs/ may have been written by
        # anyone); an object-store model is reached with the user's own credentials.
        home = None if is_remote(best.model_uri or "") else str(run.resolve())
        return model_of(field, name, "Succeeded", best.model_uri, home=home)
    if found:
        last = max((r for r, _ in found), key=lambda r: r.finished_at)
        return model_of(field, name, "Failed", None, last.message)
    raise Unresolved(
        field, name,
        f"no finished run of {name} under {runs}/ (looked for {runs}/{name}/{RESULT_FILE} and {runs}/{name}-*/{RESULT_FILE}); "
        f"run that job first, e.g. `graft run --run-dir {runs}/{name} JOB.yaml`",
        waiting=False,
    )


def resolve_run_references(job: FineTuneJob, runs: Path, source: str | None = None) -> FineTuneJob:
    """`job` with every `finetunejob://NAME` replaced by the model of NAME's newest succeeded run.
    Raises SpecError (one entry per reference that has no such run)."""
    resolved: dict[str, str] = {}
    problems: list[FieldError] = []
    for field, name in references(job.spec).items():
        try:
            resolved[field] = run_model(field, name, runs)
        except Unresolved as exc:
            problems.append(FieldError(field, f"{SCHEME}{name}: {exc.reason}"))
    if problems:
        raise SpecError(problems, source)
    return with_resolved(job, resolved)
