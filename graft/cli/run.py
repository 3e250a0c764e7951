"""`graft run FILE`: the whole FineTuneJob on a local Ray that this command starts and stops.

Preflight (before Ray starts) -> local Ray -> train + tune (live trial table) -> export the best
model -> serve it with Ray Serve -> one sample prediction -> keep serving until Ctrl-C.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import socket
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from graft.api import FineTuneJob, load_job
from graft.api.result import TrainingResult
from graft.storage import RUNS_DIR, set_storage_umask

if TYPE_CHECKING:  # rich is in [train], not in the operator image, whose `graft` builds this parser too
    from graft.cli.console import RunConsole

# Environment for every Ray worker and replica: cached DeepSpeed ops, no usage stats. Hub access
# stays as the caller's environment sets it (HF_HUB_OFFLINE=1 for offline runs, as `make demo` does).
_CACHE = Path(os.environ.get("GRAFT_CACHE", Path.home() / ".cache" / "graft"))
LOCAL_ENV = {
    "TOKENIZERS_PARALLELISM": "false",
    "RAY_USAGE_STATS_ENABLED": "0",
    "TORCH_EXTENSIONS_DIR": os.environ.get("TORCH_EXTENSIONS_DIR", str(_CACHE / "torch-extensions")),
}


def add_parser(sub: Any, lazy: Any) -> None:
    p = sub.add_parser("run", help="fine-tune, tune and serve a FineTuneJob on a local Ray")
    p.add_argument("file", help="FineTuneJob YAML")
    p.add_argument("--run-dir", help="where to keep checkpoints, the model, result.json and the plot (default: runs/NAME-TIME)")
    p.add_argument("--runs", default=RUNS_DIR, help="where finetunejob://NAME references find NAME's runs (default: runs)")
    p.add_argument("--no-serve", action="store_true", help="stop after training; do not start an endpoint")
    p.add_argument("--exit-after-sample", action="store_true", help="serve, send one sample request, then exit")
    p.add_argument("--port", type=int, default=None, help="HTTP port for the endpoint (default: 8000, or a free port if taken; 0: any free port)")
    p.add_argument("--num-cpus", type=int, default=None, help="CPUs for the local Ray (default: all)")
    p.add_argument("--sample", default=None, help="text (or, for image models, an image file) for the sample prediction (default: a validation example)")
    p.add_argument("--plain", action="store_true", help="line-by-line progress instead of a live table")
    p.set_defaults(func=lazy("graft.cli.run", "main"))


def free_port(preferred: int = 0) -> int:
    """`preferred` if it is free on loopback, else (or for 0) any free port."""
    for port in ([preferred] if preferred else []) + [0]:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return int(s.getsockname()[1])
    raise OSError("no free TCP port on 127.0.0.1")


def default_run_dir(job: FineTuneJob) -> Path:
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    return Path(RUNS_DIR) / f"{job.metadata.name}-{stamp}"


def _absolute(value: str | None) -> str | None:
    if not value or "://" in value or Path(value).is_absolute() or not Path(value).exists():
        return value
    return str(Path(value).resolve())


def absolute_local_sources(job: FineTuneJob) -> FineTuneJob:
    """`job` with relative local paths in its sources (model, dataset, validation, distillation
    teacher) made absolute against the current directory: Ray's workers do not run in it, so a
    relative path that exists here would not be found there."""
    spec = job.spec
    validation = spec.dataset.validation.model_copy(update={"source": _absolute(spec.dataset.validation.source)})
    dataset = spec.dataset.model_copy(update={"source": _absolute(spec.dataset.source), "validation": validation})
    update: dict[str, Any] = {"model": spec.model.model_copy(update={"source": _absolute(spec.model.source)}), "dataset": dataset}
    if spec.distillation is not None:
        update["distillation"] = spec.distillation.model_copy(update={"teacher": _absolute(spec.distillation.teacher)})
    return job.model_copy(update={"spec": spec.model_copy(update=update)})


def main(args: argparse.Namespace) -> int:
    from graft.cli.references import resolve_run_references

    set_storage_umask()  # the local Ray started below inherits it (runs/ stays group-writable)

    job = resolve_run_references(absolute_local_sources(load_job(args.file)), Path(args.runs), source=args.file)
    run_dir = Path(args.run_dir) if args.run_dir else default_run_dir(job)
    run_dir = run_dir.resolve()
    run_dir.mkdir(parents=True, exist_ok=True)
    from graft.cli.console import RunConsole

    console = RunConsole(plain=args.plain or not os.isatty(1))
    console.phase("preflight", f"checking {args.file}")

    from graft.jobs.preflight import check

    check(job.spec)  # raises SpecError (exit 2) before any Ray work
    (run_dir / "spec.json").write_text(json.dumps(job.to_wire(), indent=2))

    for key, value in LOCAL_ENV.items():
        os.environ.setdefault(key, value)
    # Ctrl-C aborts the whole run (Ray is shut down in `finally`). Ray Tune's own handler would
    # instead end tuning early, carry on to serving, and stay installed after fit().
    os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = "1"
    # graft run draws its own trial table; Tune's console reporter stays quiet.
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    ray_dir = Path(tempfile.mkdtemp(prefix="graft-ray-", dir="/tmp"))
    console.phase("ray", f"starting a local Ray (temp dir {ray_dir})")
    import ray

    from graft.jobs.tune import ray_init_resources

    ray.init(
        address="local",
        num_cpus=args.num_cpus,
        resources=ray_init_resources(job.spec),
        _temp_dir=str(ray_dir),
        include_dashboard=False,
        log_to_driver=False,
        runtime_env={"env_vars": dict(LOCAL_ENV)},
        configure_logging=True,
        logging_level=logging.WARNING,
    )
    try:
        result = _train(job, run_dir, console)
        if result.status != "succeeded" or not result.model_uri:
            console.error(f"training failed: {result.message}")
            return 1
        if args.no_serve or not job.spec.serving.enabled:
            console.done(f"model exported to {result.model_uri}; serving skipped")
            return 0
        return _serve(job, result, args, console)
    finally:
        _shutdown_ray(ray_dir)


def _train(job: FineTuneJob, run_dir: Path, console: RunConsole) -> TrainingResult:
    from graft.jobs.entrypoint import TrainingFailed, run_job
    from graft.jobs.plot import plot_trials

    started = time.monotonic()
    with console.trials(job) as table:
        try:
            result = run_job(job, run_dir, on_event=table.on_event)
        except TrainingFailed as exc:
            result = exc.result
    console.summary(result, seconds=time.monotonic() - started)
    if result.trials:
        plot = run_dir / "trials.png"
        plot_trials(result, plot)
        console.info(f"learning curves: {plot}")
    console.info(f"result document: {run_dir / 'result.json'}")
    return result


def _serve(job: FineTuneJob, result: TrainingResult, args: argparse.Namespace, console: RunConsole) -> int:
    import httpx

    from graft.serving.deploy import deploy_local, shutdown_local

    assert result.model_uri is not None
    port = free_port(8000 if args.port is None else args.port)
    console.phase("serving", f"deploying the best model ({result.best_trial_id}) with Ray Serve")
    url = deploy_local(
        result.model_uri, job.spec.serving, app_name=job.metadata.name, route_prefix="/", http_port=port,
        max_seq_length=job.spec.training.max_seq_length, trust_remote_code=job.spec.model.trust_remote_code,
        task=str(job.spec.task),
    )
    if job.spec.task == "causal-lm":
        from graft.cli.chat_sample import sample

        sample(job, url, console, args.sample)
    else:
        image = job.spec.task == "image-classification"
        if image:
            text, expected, request = _image_example(job, args.sample)
        else:
            text, expected = (args.sample, None) if args.sample else _validation_example(job)
            request = {"json": {"text": text}}
        response = httpx.post(f"{url.rstrip('/')}/predict", timeout=60, **request)
        response.raise_for_status()
        prediction = response.json()["predictions"][0]
        console.endpoint(url, text, prediction, expected, image=image)
    if args.exit_after_sample:
        shutdown_local()
        return 0
    console.info("serving; press Ctrl-C to stop")
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        console.info("stopping the endpoint")
    finally:
        shutdown_local()
    return 0


def _validation_example(job: FineTuneJob) -> tuple[str, str]:
    """A held-out example and its true label, for the sample prediction."""
    from graft.jobs.data import load_dataset

    data = load_dataset(job.spec.dataset)
    return data.val_texts[0], data.label_names[data.val_labels[0]]


def _image_example(job: FineTuneJob, sample: str | None) -> tuple[str, str | None, dict[str, Any]]:
    """(what to show, true label, httpx arguments) for the sample prediction of an image model:
    `--sample PATH` posts that image file, else the first validation image (as PNG)."""
    import io

    if sample:
        return sample, None, {"content": Path(sample).read_bytes(), "headers": {"Content-Type": "image/png"}}
    from PIL import Image

    from graft.jobs.tasks.image_data import load_images

    data = load_images(job.spec.dataset)
    image = data.val_images[0]
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG")
    shown = f"validation image 0 ({image.shape[1]}x{image.shape[0]} pixels, sent as image/png)"
    return shown, data.label_names[data.val_labels[0]], {"content": buf.getvalue(), "headers": {"Content-Type": "image/png"}}


def _shutdown_ray(ray_dir: Path) -> None:
    import ray

    if ray.is_initialized():
        ray.shutdown()
    shutil.rmtree(ray_dir, ignore_errors=True)
