"""bf16 against fp32 on this CPU: the measurement behind what `precision: auto` picks on a CPU.

Three workloads, each timed in fp32 and in bf16 in the same run, alternating, on one torch thread:

- `matmul 512` and `matmul 1024`: a square matrix product, both operands in the dtype;
- `MiniLM-sized MLP step`: forward and backward of a 384 -> 1536 -> 384 block on 256 tokens, fp32
  weights, bf16 through `torch.autocast` (what Graft's training loop does in bf16).

The report gives the median time of each and the ratio bf16 / fp32 (above 1: bf16 is slower), with
the CPU's bf16 flags (`avx512_bf16`, `amx_bf16`) and what `precision: auto` resolves to here
(`graft.jobs.deepspeed_config`).

    .venv/bin/python bench/cpu_precision.py                                  # print the section
    .venv/bin/python bench/cpu_precision.py --write-doc docs/benchmarks.md   # and keep it
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.report import environment, publish  # noqa: E402
from graft.jobs.deepspeed_config import cpu_bf16_is_fast, cpu_flags, resolve_precision  # noqa: E402

HEADING = "## CPU precision (`bench/cpu_precision.py`)"


def _matmul(n: int, dtype: Any) -> Callable[[], None]:
    import torch

    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)

    def product() -> None:
        torch.mm(a, b)

    return product


def _mlp_step(bf16: bool) -> Callable[[], None]:
    import torch

    block = torch.nn.Sequential(torch.nn.Linear(384, 1536), torch.nn.GELU(), torch.nn.Linear(1536, 384))
    x = torch.randn(256, 384)

    def step() -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = block(x).float().sum()
        loss.backward()

    return step


def _median_ms(fn: Callable[[], None], repeats: int) -> float:
    for _ in range(3):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times)


def measure(repeats: int) -> dict[str, Any]:
    import torch

    load = os.getloadavg()[0]
    torch.set_num_threads(1)
    workloads: dict[str, tuple[Callable[[], None], Callable[[], None]]] = {
        "matmul 512": (_matmul(512, torch.float32), _matmul(512, torch.bfloat16)),
        "matmul 1024": (_matmul(1024, torch.float32), _matmul(1024, torch.bfloat16)),
        "MiniLM-sized MLP step (autocast)": (_mlp_step(False), _mlp_step(True)),
    }
    rows = []
    for name, (fp32, bf16) in workloads.items():
        a, b = [], []
        for _ in range(3):  # alternate, so a change of load hits both
            a.append(_median_ms(fp32, repeats))
            b.append(_median_ms(bf16, repeats))
        rows.append({"workload": name, "fp32_ms": statistics.median(a), "bf16_ms": statistics.median(b)})
    flags = cpu_flags()
    return {
        "rows": rows,
        "bf16_flags": sorted(flags & {"avx512_bf16", "amx_bf16", "amx_tile"}) or ["none"],
        "auto": resolve_precision("auto", gpu=False, cpu_bf16=cpu_bf16_is_fast()),
        "load": load,
        **environment(1, ("torch",)),
    }


def render(result: dict[str, Any], command: str) -> str:
    lines = [
        HEADING, "",
        f"bf16 flags: {', '.join(result['bf16_flags'])}; `precision: auto` on this CPU resolves to **{result['auto']}**.", "",
        "```", command, "```", "",
        "| workload (1 thread) | fp32 | bf16 | bf16 / fp32 |", "|---|---:|---:|---:|",
    ]
    for row in result["rows"]:
        lines.append(f"| {row['workload']} | {row['fp32_ms']:.2f} ms | {row['bf16_ms']:.2f} ms | {row['bf16_ms'] / row['fp32_ms']:.2f}x |")
    lines += ["", f"{result['machine']}; load average {result['load']:.1f} at the start; {result['date']}, {result['versions']}.", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--json", type=Path, default=None)
    p.add_argument("--write-doc", type=Path, default=None)
    args = p.parse_args(argv)
    publish("cpu_precision.py", argv, measure(args.repeats), render, HEADING, args.json, args.write_doc)


if __name__ == "__main__":
    main()
