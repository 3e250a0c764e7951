"""`python -m graft.jobs --spec spec.yaml --result result.json [--run-dir DIR] [--address ADDR]`.

The RayJob entrypoint: connects to Ray (`--address`, else RAY_ADDRESS, else a local cluster
with the custom resources trials need), runs the job, writes the result document, logs one
line per epoch. Exit status: 0 succeeded, 1 training failed, 2 invalid spec.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from graft.api.argcodec import decode_arg
from graft.api.errors import FieldError, SpecError
from graft.api.load import parse_as, parse_spec
from graft.api.result import RESULT_LOG_MARKER
from graft.api.spec import FineTuneJob
from graft.jobs.events import (
    JobEvent,
    JobResumedEvent,
    PhaseEvent,
    TrialEpochEvent,
    TrialFinishedEvent,
    TrialStartedEvent,
    TrialStoppedEvent,
)
from graft.jobs.joblog import JobLog
from graft.storage import set_storage_umask


def load_job_document(path: Path) -> FineTuneJob:
    """A FineTuneJob from a YAML/JSON file holding either the whole object or only its spec."""
    import yaml

    if not path.is_file():
        raise SpecError([FieldError("", f"spec file {str(path)!r} does not exist")], source=str(path))
    try:
        doc: Any = json.loads(path.read_text()) if path.suffix == ".json" else yaml.safe_load(path.read_text())
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        raise SpecError([FieldError("", f"cannot parse: {exc}")], source=str(path)) from exc
    if not isinstance(doc, dict):
        raise SpecError([FieldError("", "must be a mapping")], source=str(path))
    if "spec" in doc:
        return parse_as(FineTuneJob, doc, source=str(path))
    spec = parse_spec(doc, source=str(path))
    name = os.environ.get("GRAFT_JOB_NAME", "finetune")
    return FineTuneJob.model_validate({"metadata": {"name": name}, "spec": spec.to_wire()})


def parse_job_json(text: str) -> FineTuneJob:
    """A FineTuneJob from the JSON document of `--spec-json`."""
    try:
        doc: Any = json.loads(text)
    except json.JSONDecodeError as exc:
        raise SpecError([FieldError("", f"--spec-json is not JSON: {exc}")], source="--spec-json") from exc
    if not isinstance(doc, dict) or "spec" not in doc:
        raise SpecError([FieldError("", "--spec-json must be a FineTuneJob document with a spec")], source="--spec-json")
    return parse_as(FineTuneJob, doc, source="--spec-json")


def _decoded(value: str, option: str) -> str:
    try:
        return decode_arg(value)
    except ValueError as exc:
        raise SpecError([FieldError("", f"{option}: {exc}")], source=option) from exc


def format_event(event: JobEvent) -> str:
    """The one plain log line of an event."""
    if isinstance(event, PhaseEvent):
        took = f" ({event.previous} took {event.seconds:.1f}s)" if event.previous and event.seconds is not None else ""
        return f"[graft] phase {event.phase}{took} {event.message}".rstrip()
    if isinstance(event, TrialStartedEvent):
        return f"[graft] trial {event.trial_id} started config={event.config}"
    if isinstance(event, TrialEpochEvent):
        m = " ".join(f"{k}={v:.4f}" for k, v in event.metrics.items())
        return f"[graft] trial {event.trial_id} epoch {event.epoch}/{event.epochs} {m}"
    if isinstance(event, TrialStoppedEvent):
        return f"[graft] trial {event.trial_id} stopped after epoch {event.epoch}/{event.epochs} by {event.reason}"
    if isinstance(event, TrialFinishedEvent):
        extra = f" error={event.error.splitlines()[-1]}" if event.error else ""
        return f"[graft] trial {event.trial_id} {event.status} epochs={event.epochs_completed} best={event.best_score}{extra}"
    if isinstance(event, JobResumedEvent):
        if not event.restored:
            return f"[graft] attempt {event.attempt}: the earlier attempt left no restorable experiment; trials start over"
        resumed = ", ".join(f"{t} from epoch {e}" for t, e in event.trials_resumed.items()) or "none"
        return (f"[graft] attempt {event.attempt} resumes the experiment: {len(event.trials_skipped)} finished trial(s) kept, "
                f"continuing: {resumed}; time lost {event.time_lost_seconds:.0f}s")
    return f"[graft] job {event.status}: {event.message} model={event.model_uri}"


def log_event(event: JobEvent) -> None:
    """One plain line per event on stdout (the RayJob's log)."""
    print(format_event(event), flush=True)


def progress_emitter(job: FineTuneJob, result: str, joblog: JobLog | None = None) -> Callable[[JobEvent], None]:
    """Per event: the human log line (also kept in `joblog`), the structured `GRAFT_EVENT {json}`
    line, and the progress snapshot written next to the result (`progress.json`, read by the operator)."""
    from graft.jobs.progress import PROGRESS_FILE, ProgressTracker, ProgressWriter, event_line

    spec = job.spec
    tracker = ProgressTracker(spec.tuning.num_trials, spec.score_mode, spec.training.epochs)
    where = f"{result.rsplit('/', 1)[0]}/{PROGRESS_FILE}" if "/" in result else PROGRESS_FILE
    writer = ProgressWriter(tracker, where,
                            warn=lambda m: print(f"[graft] {m}", file=sys.stderr, flush=True))

    def emit(event: JobEvent) -> None:
        line = format_event(event)
        print(line, flush=True)
        if joblog is not None:
            joblog.add(line)
        print(event_line(event), flush=True)
        writer(event)

    return emit


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m graft.jobs", description="Run a FineTuneJob on Ray and write its result document.")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--spec", type=Path, help="FineTuneJob (or its spec) as a YAML or JSON file")
    source.add_argument("--spec-json", help="the FineTuneJob as a JSON document")
    source.add_argument("--spec-b64", help="the FineTuneJob as a base64 JSON document (how the operator passes it: graft.api.argcodec)")
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument("--result", help="where to write the TrainingResult JSON: a path or an fsspec URI (s3://...)")
    target.add_argument("--result-b64", help="--result, base64 (graft.api.argcodec)")
    parser.add_argument("--run-dir", type=Path, default=None, help="working directory (default: next to --result)")
    parser.add_argument("--address", default=None, help="Ray address (default: RAY_ADDRESS, else start a local Ray)")
    args = parser.parse_args(argv)
    set_storage_umask()  # before Ray starts: a local Ray's workers inherit it (runs/ stays group-writable)

    try:
        args.result = _decoded(args.result_b64, "--result-b64") if args.result_b64 else args.result
        if args.spec_b64:
            job = parse_job_json(_decoded(args.spec_b64, "--spec-b64"))
        else:
            job = parse_job_json(args.spec_json) if args.spec_json else load_job_document(args.spec)
        from graft.jobs import preflight

        preflight.check(job.spec)
    except SpecError as exc:
        print(exc.report(), file=sys.stderr)
        return 2

    import ray

    from graft.jobs.entrypoint import RESULT_FILE, TrainingFailed, run_job
    from graft.jobs.tune import ray_init_resources

    remote = "://" in args.result and not args.result.startswith("file://")
    local_result = None if remote else Path(args.result.removeprefix("file://")).resolve()
    run_dir = args.run_dir or (local_result.parent if local_result else Path(tempfile.mkdtemp(prefix="graft-job-")))
    address = args.address or os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address)
    else:
        ray.init(address="local", resources=ray_init_resources(job.spec), include_dashboard=False)
    from graft import storage
    from graft.jobs.tune import job_storage

    joblog = JobLog(storage.join(job_storage(job, run_dir), storage.LOG_FILE))
    code = 0
    try:
        run_job(job, run_dir, on_event=progress_emitter(job, args.result, joblog))
    except TrainingFailed as exc:
        print(f"[graft] training failed: {exc}", file=sys.stderr)
        code = 1
    except SpecError as exc:
        print(exc.report(), file=sys.stderr)
        return 2
    finally:
        ray.shutdown()
    produced = Path(run_dir) / RESULT_FILE
    if produced.exists():
        joblog.add(publish_result(produced, args.result, local_result))
    joblog.flush()
    return code


def publish_result(produced: Path, target: str, local_target: Path | None) -> str:
    """Print result.json on one log line (the operator's fallback; returned), then copy it to
    `--result` (a path or a URI); a copy that fails (storage full or unreachable) is reported, not raised."""
    text = produced.read_text()
    line = RESULT_LOG_MARKER + json.dumps(json.loads(text), separators=(",", ":"))
    print(line, flush=True)
    try:
        if local_target is None:
            from graft import storage

            storage.write_text(target, text)
        elif produced.resolve() != local_target:
            from graft import storage

            storage.ensure_dir(local_target.parent)
            shutil.copyfile(produced, local_target)
    except OSError as exc:
        print(f"[graft] could not write the result to {target}: {exc}", file=sys.stderr, flush=True)
    return line


if __name__ == "__main__":
    sys.exit(main())
