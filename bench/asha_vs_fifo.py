"""ASHA vs random search run to the end (FIFO): epochs and wall time to a target accuracy, over seeds.

The schedulers are Graft's own (`graft.jobs.tune.make_scheduler` on a FineTuneJob spec), in Ray
Tune with Graft's random search (`make_search_alg`, seeded), so both arms of one seed evaluate the
same sampled configs. The model is small so that many trials fit: a one-hidden-layer MLP on
scikit-learn's digits (1797 8x8 images, 10 classes; 1437 train / 360 validation, fixed split),
searching the learning rate (loguniform 1e-4..1) and the hidden width (4, 16 or 64).

Per seed and arm: total epochs trained, epochs (and seconds) until some trial first reports the
target validation accuracy, the best final accuracy, and whether the arm's best trial has the
config that is best when every trial runs to the end (FIFO's best).

    .venv/bin/python bench/asha_vs_fifo.py --seeds 5 --write-doc docs/benchmarks.md
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench.report import write_section  # noqa: E402

SECTION = "## ASHA vs random search"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seeds", type=int, default=5)
    p.add_argument("--trials", type=int, default=16)
    p.add_argument("--epochs", type=int, default=9)
    p.add_argument("--target", type=float, default=0.95, help="validation accuracy to reach")
    p.add_argument("--concurrent", type=int, default=2)
    p.add_argument("--arms", default="fifo,asha,asha-rf3", help="fifo, asha (the spec defaults), asha-rf3")
    p.add_argument("--json", type=Path, default=None)
    p.add_argument("--write-doc", type=Path, default=None)
    return p.parse_args(argv)


def digits() -> tuple[Any, ...]:
    import numpy as np
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    order = np.random.default_rng(0).permutation(len(y))
    x, y = (x[order] / 16.0).astype("float32"), y[order]
    return x[:1437], y[:1437], x[1437:], y[1437:]


def trainable(config: dict[str, Any], data: tuple[Any, ...]) -> None:
    """One trial: an MLP trained for `epochs` epochs, reporting validation accuracy after each."""
    import torch
    from ray import tune

    torch.set_num_threads(1)
    xtr, ytr, xva, yva = (torch.from_numpy(a) for a in data)
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(64, int(config["hidden"])), torch.nn.ReLU(), torch.nn.Linear(int(config["hidden"]), 10))
    opt = torch.optim.SGD(model.parameters(), lr=float(config["learningRate"]), momentum=0.9)
    gen = torch.Generator().manual_seed(0)
    for epoch in range(1, int(config["epochs"]) + 1):
        for idx in torch.randperm(len(ytr), generator=gen).split(64):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(model(xtr[idx]), ytr[idx].long()).backward()
            opt.step()
        with torch.no_grad():
            acc = float((model(xva).argmax(-1) == yva).float().mean())
        tune.report({"epoch": epoch, "eval_accuracy": acc})


def run_arm(arm: str, seed: int, args: argparse.Namespace, data: tuple[Any, ...], storage: str) -> dict[str, Any]:
    from ray import tune

    from graft.api.spec import FineTuneJobSpec
    from graft.jobs.tune import make_scheduler, make_search_alg

    scheduler: dict[str, Any] = {"type": "fifo"} if arm == "fifo" else {"type": "asha"}
    if arm == "asha-rf3":
        scheduler["reductionFactor"] = 3
    spec = FineTuneJobSpec.model_validate(
        {
            "model": {"source": "/m"}, "dataset": {"source": "/d"},
            "training": {"epochs": args.epochs, "seed": seed},
            "tuning": {"numTrials": args.trials, "maxConcurrentTrials": args.concurrent, "scheduler": scheduler,
                       "searchSpace": {"learningRate": {"type": "loguniform", "low": 1e-4, "high": 1.0}}},
        }
    )
    arrivals: list[tuple[float, str, int, float]] = []

    class Arrivals(tune.Callback):
        def on_trial_result(self, iteration: int, trials: list[Any], trial: Any, result: dict[str, Any], **info: Any) -> None:
            arrivals.append((time.monotonic(), trial.trial_id, int(result["epoch"]), float(result["eval_accuracy"])))

    space = {"learningRate": tune.loguniform(1e-4, 1.0), "hidden": tune.choice([4, 16, 64]), "epochs": args.epochs}
    started = time.monotonic()
    grid = tune.Tuner(
        tune.with_resources(tune.with_parameters(trainable, data=data), {"CPU": 1.0 / args.concurrent}),
        param_space=space,
        tune_config=tune.TuneConfig(metric="eval_accuracy", mode="max", num_samples=args.trials, scheduler=make_scheduler(spec), search_alg=make_search_alg(spec)),
        run_config=tune.RunConfig(name=f"{arm}-{seed}", storage_path=storage, callbacks=[Arrivals()], verbose=0),
    ).fit()
    wall = time.monotonic() - started
    to_target = next(((i + 1, t - started) for i, (t, _, _, acc) in enumerate(arrivals) if acc >= args.target), (None, None))
    finals = {}
    for r in grid:
        finals[(round(float(r.config["learningRate"]), 12), int(r.config["hidden"]))] = (int(r.metrics["epoch"]), float(r.metrics["eval_accuracy"]))
    best = max(finals, key=lambda k: finals[k][1])
    return {
        "arm": arm, "seed": seed, "epochs": len(arrivals), "wall_s": wall, "epochs_to_target": to_target[0], "seconds_to_target": to_target[1],
        "best_accuracy": finals[best][1], "best_config": list(best), "finals": {f"{k[0]}|{k[1]}": v for k, v in finals.items()},
    }


def full_run_best(fifo: dict[str, Any]) -> str:
    return max(fifo["finals"], key=lambda k: fifo["finals"][k][1])


def render(runs: list[dict[str, Any]], args: argparse.Namespace, load: str, command: str) -> str:
    from graft.api.spec import SchedulerSpec
    from graft.jobs.search_space import asha_epoch_fraction

    default = SchedulerSpec()
    best_by_seed = {r["seed"]: full_run_best(r) for r in runs if r["arm"] == "fifo"}
    lines = ["| arm | total epochs (mean) | vs FIFO | epochs to target (median) | s to target (median) | wall s (mean) | best accuracy (mean) | finds FIFO's best config |", "|---|---:|---:|---:|---:|---:|---:|---:|"]
    fifo_epochs = statistics.mean(r["epochs"] for r in runs if r["arm"] == "fifo") if best_by_seed else float("nan")
    for arm in args.arms.split(","):
        rs = [r for r in runs if r["arm"] == arm]
        if not rs:
            continue
        reached = [r["epochs_to_target"] for r in rs if r["epochs_to_target"] is not None]
        secs = [r["seconds_to_target"] for r in rs if r["seconds_to_target"] is not None]
        found = sum(1 for r in rs if r["seed"] in best_by_seed and f"{r['best_config'][0]}|{r['best_config'][1]}" == best_by_seed[r["seed"]])
        ep = statistics.mean(r["epochs"] for r in rs)
        lines.append(
            f"| {arm} | {ep:.0f} | {ep / fifo_epochs:.2f} | {statistics.median(reached) if reached else 'never'} ({len(reached)}/{len(rs)} reached) | "
            f"{statistics.median(secs):.0f} | {statistics.mean(r['wall_s'] for r in rs):.0f} | {statistics.mean(r['best_accuracy'] for r in rs):.3f} | {found}/{len(rs)} |"
        )
    rf2 = asha_epoch_fraction(args.epochs, default.grace_period, default.reduction_factor)
    rf3 = asha_epoch_fraction(args.epochs, default.grace_period, 3)
    return f"""{SECTION}

Graft's ASHA (`tuning.scheduler`, rungs on `epoch`) against random search with every trial run to the end
(FIFO), on the same seeded random search ({args.trials} trials, {args.concurrent} at a time, learning rate
loguniform 1e-4..1 and hidden width 4/16/64, {args.epochs} epochs), seeds 0..{args.seeds - 1}. The model is small so
that it fits: a one-hidden-layer MLP on scikit-learn's digits (1437 train / 360 validation). Target:
validation accuracy {args.target}. "asha" uses the spec defaults (gracePeriod {default.grace_period}, reductionFactor
{default.reduction_factor:g}); "asha-rf3" reductionFactor 3.

```
{command}
```

{chr(10).join(lines)}

- Epochs to target count every reported epoch of every trial, in the order Tune received them, until the
  first report at or above the target. "Finds FIFO's best config": the arm's best trial has the config
  that is best when every trial runs to the end (same seed, same sampled configs).
- Expected epochs per trial for many trials (`graft.jobs.search_space.asha_epoch_fraction`): with
  {args.epochs} epochs, {rf2:.2f} of FIFO's at reductionFactor {default.reduction_factor:g} and {rf3:.2f} at 3; with 3 epochs
  {asha_epoch_fraction(3, 1, 2):.2f} and {asha_epoch_fraction(3, 1, 3):.2f}; with 2 epochs {asha_epoch_fraction(2, 1, 2):.2f} and {asha_epoch_fraction(2, 1, 3):.2f}. Trials that start before a rung has
  results are promoted (ASHA is asynchronous), so a run with few trials saves less.
- Machine: {load}.
"""


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import ray

    data = digits()
    runs: list[dict[str, Any]] = []
    loads = [os.getloadavg()[0]]
    ray.init(address="local", num_cpus=2, include_dashboard=False, _temp_dir=tempfile.mkdtemp(prefix="gas", dir="/tmp"), logging_level="WARNING")
    try:
        with tempfile.TemporaryDirectory(prefix="graft-asha-") as storage:
            for seed in range(args.seeds):
                for arm in args.arms.split(","):
                    runs.append(run_arm(arm, seed, args, data, storage))
                    loads.append(os.getloadavg()[0])
                    print(json.dumps({k: v for k, v in runs[-1].items() if k != "finals"}), flush=True)
    finally:
        ray.shutdown()
    load = f"2 CPU cores; 1-minute load average {min(loads):.1f} to {max(loads):.1f} while it ran (its own {args.concurrent} concurrent trials included)"
    command = " ".join(["python bench/asha_vs_fifo.py", *(argv if argv is not None else sys.argv[1:])])
    text = render(runs, args, load, command)
    print(text)
    if args.json:
        args.json.write_text(json.dumps(runs, indent=2))
    if args.write_doc:
        write_section(args.write_doc, SECTION, text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
