"""Graft's training path at 1 and 2 workers, per engine: samples/s, 2-worker scaling efficiency and
peak memory per worker for `deepspeed.enabled: false` (DDP) and ZeRO stages 1, 2 and 3.

Each configuration is one Ray Train `TorchTrainer` run of Graft's own loop (`bench/graft_arm.py`,
as graft/jobs/tune.py builds a trial) on the same IMDB reviews of at least `--max-length` tokens
(every batch is batch x max_length tokens), all-MiniLM-L6-v2 with a 2-class head, bf16, one torch
thread and one CPU per worker. Epoch 1 is a warm-up; samples/s is the measured epochs' samples over
their training seconds as the workers report them. Peak memory is the largest resident set a Train
worker process reached, sampled every 0.2 s from outside (psutil), so it includes the Python
runtime, torch and the model, not only what the engine allocates.

    .venv/bin/python bench/zero_stages.py --json /tmp/zero.json --write-doc docs/benchmarks.md
    .venv/bin/python bench/zero_stages.py --quick
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.report import environment, publish  # noqa: E402
from bench.training_overhead import DATA_SOURCE, LABEL_NAMES, MODEL_SOURCE, Workload, load_reviews, start_ray  # noqa: E402

HEADING = "## Training engines and workers (`bench/zero_stages.py`)"
# (label, workers, deepspeed block)
CONFIGS: list[tuple[str, int, dict[str, Any]]] = [
    ("1 worker, default spec (plain engine)", 1, {}),
    ("2 workers, `enabled: false` (DDP; `zeroStage: 0`, the default, runs the same)", 2, {"enabled": False}),
    ("2 workers, ZeRO-1", 2, {"zeroStage": 1}),
    ("2 workers, ZeRO-2", 2, {"zeroStage": 2}),
    ("2 workers, ZeRO-3", 2, {"zeroStage": 3}),
]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=12, help="optimizer steps per epoch (each worker)")
    p.add_argument("--epochs", type=int, default=3, help="epochs per run; the first is a warm-up")
    p.add_argument("--batch-size", type=int, default=8, help="per worker")
    p.add_argument("--max-length", type=int, default=128)
    p.add_argument("--quick", action="store_true", help="smoke mode: 2 steps, 2 epochs, 1 and 2 workers without ZeRO")
    p.add_argument("--json", type=Path, default=None)
    p.add_argument("--write-doc", type=Path, default=None)
    args = p.parse_args(argv)
    if args.quick:
        args.steps, args.epochs = 2, 2
    return args


class PeakRss:
    """Samples the resident set of every Ray Train worker process on this machine; keeps each one's peak."""

    def __init__(self, interval: float = 0.2) -> None:
        self.interval = interval
        self.peaks: dict[int, int] = {}  # pid -> peak bytes
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        import psutil

        while not self._stop.wait(self.interval):
            for proc in psutil.process_iter(["pid", "cmdline"]):
                try:
                    if "RayTrainWorker" in " ".join(proc.info["cmdline"] or []):
                        self.peaks[proc.pid] = max(self.peaks.get(proc.pid, 0), proc.memory_info().rss)
                except psutil.Error:
                    continue


def run_config(label: str, workers: int, deepspeed: dict[str, Any], work: Workload, raw: Any, storage: Path) -> dict[str, Any]:
    from bench.graft_arm import graft_fit
    from graft.api.spec import FineTuneJobSpec
    from graft.jobs.engine import choose_backend
    from graft.jobs.sources import resolve_source
    from graft.jobs.tasks import get_task

    training = work.training_spec(work.graft_epochs).model_dump(mode="json", by_alias=True)
    training["deepspeed"] = {**training.get("deepspeed", {}), **deepspeed}
    spec = FineTuneJobSpec.model_validate({
        "model": {"source": MODEL_SOURCE}, "dataset": {"source": DATA_SOURCE}, "training": training,
        "resources": {"workers": workers, "cpusPerWorker": 1},
    })
    data = get_task(spec).prepare(raw, resolve_source(MODEL_SOURCE, field="model", kind="model"))
    with PeakRss() as rss:
        reports, fit_seconds, _ = graft_fit(spec, data, storage)
    measured = reports[1:]
    train_seconds = sum(float(r["train_seconds"]) for r in measured)
    steps = sum(int(r["steps"]) for r in measured)
    return {
        "label": label, "workers": workers, "engine": choose_backend(spec.training, workers), "steps": steps,
        "samples_per_s": steps * work.batch_size * workers / train_seconds, "fit_seconds": fit_seconds,
        "peak_rss_mib": max(rss.peaks.values(), default=0) / 2**20, "worker_processes": len(rss.peaks),
        "loss": float(measured[-1]["train_loss"]),
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    from transformers import AutoTokenizer

    from graft.jobs.data import LoadedDataset
    from graft.jobs.sources import resolve_source

    work = Workload(steps=args.steps, warmup=0, graft_epochs=args.epochs, batch_size=args.batch_size, max_length=args.max_length,
                    threads=1, precision="bf16", val_rows=32)
    tokenizer = AutoTokenizer.from_pretrained(str(resolve_source(MODEL_SOURCE, field="model", kind="model")))
    # Two workers each take a shard of the epoch: give them twice the rows so both do `steps` steps.
    big = Workload(**{**work.__dict__, "steps": 2 * work.steps})
    texts, labels, val_texts, val_labels = load_reviews(tokenizer, big)
    configs = CONFIGS[:2] if args.quick else CONFIGS
    storage = Path(tempfile.mkdtemp(prefix="gzs", dir="/tmp"))
    load_before = os.getloadavg()
    temp = start_ray(work, cpus=2)
    import ray

    rows = []
    try:
        for label, workers, ds in configs:
            n = work.steps * work.batch_size * workers
            raw = LoadedDataset(texts[:n], labels[:n], val_texts, val_labels, list(LABEL_NAMES))
            rows.append(run_config(label, workers, ds, work, raw, storage))
            print(json.dumps(rows[-1]), flush=True)
    finally:
        ray.shutdown()
        shutil.rmtree(storage, ignore_errors=True)
        shutil.rmtree(temp, ignore_errors=True)
    return {"work": {"steps": args.steps, "epochs": args.epochs, "batch_size": args.batch_size, "max_length": args.max_length},
            "rows": rows, "load_before": load_before, "load_after": os.getloadavg()}


def render(r: dict[str, Any], command: str) -> str:
    env = environment(1)
    w = r["work"]
    one = next((x for x in r["rows"] if x["workers"] == 1), None)
    lines = [
        f"{HEADING}\n",
        f"Command: `{command}`. Machine: {env['machine']}; {env['date']}; {env['versions']}; "
        f"1-minute load average {r['load_before'][0]:.1f} before, {r['load_after'][0]:.1f} after.",
        (f"Graft's loop in Ray Train, all-MiniLM-L6-v2 (2 classes), bf16, {w['batch_size']} x {w['max_length']} tokens per "
         f"worker step, {w['steps']} steps per epoch per worker, {w['epochs']} epochs (the first a warm-up), 1 CPU and 1 torch "
         "thread per worker. Scaling efficiency: samples/s at 2 workers / (2 x samples/s at 1 worker).\n"),
        "| configuration | engine | samples/s | scaling efficiency | peak RSS per worker (MiB) | whole fit (s) |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for x in r["rows"]:
        eff = f"{x['samples_per_s'] / (2 * one['samples_per_s']):.2f}" if one and x["workers"] == 2 else "-"
        lines.append(f"| {x['label']} | {x['engine']} | {x['samples_per_s']:.1f} | {eff} | {x['peak_rss_mib']:.0f} | {x['fit_seconds']:.0f} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    publish("zero_stages.py", argv, run(args), render, HEADING, args.json, args.write_doc)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
