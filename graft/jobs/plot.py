"""Learning curves of every trial: the score metric per epoch, with ASHA stops marked."""

from __future__ import annotations

from pathlib import Path

from graft.api.result import TrainingResult
from graft.api.spec import METRICS

_ATTR = {name: name for name in METRICS}


def plot_trials(result: TrainingResult, path: str | Path, metric: str | None = None) -> Path:
    """Save a PNG of `metric` (default: the result's score metric) per epoch for every trial.

    Trials stopped early end in an `x` with a note of the epoch; failed trials are dashed; the
    best trial is drawn thicker. Returns the path written.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    name = metric or result.metric
    attr = _ATTR.get(name)
    if attr is None:
        raise ValueError(f"cannot plot metric {name!r}; choose one of {', '.join(_ATTR)}")
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(8, 5), dpi=110)
    try:
        stopped_label_used = False
        for trial in sorted(result.trials, key=lambda t: t.trial_id):
            history = sorted(trial.history, key=lambda h: h.epoch)
            if not history:
                continue
            xs = [h.epoch for h in history]
            ys = [float(getattr(h, attr)) for h in history]
            cfg = ", ".join(f"{k}={_fmt(v)}" for k, v in sorted(trial.config.items()))
            best = trial.trial_id == result.best_trial_id
            label = f"{trial.trial_id}{' (best)' if best else ''}" + (f": {cfg}" if cfg else "")
            style = "--" if trial.status == "failed" else "-"
            (line,) = ax.plot(xs, ys, style, marker="o", linewidth=2.8 if best else 1.4, label=label)
            if trial.status == "stopped_early" and trial.stopped_at_epoch is not None:
                ax.plot(
                    [xs[-1]], [ys[-1]], "x", color=line.get_color(), markersize=13, markeredgewidth=2.5,
                    label=None if stopped_label_used else "stopped early (ASHA / early stopping)",
                )
                stopped_label_used = True
                ax.annotate(f"stopped @ {trial.stopped_at_epoch}", (xs[-1], ys[-1]), textcoords="offset points", xytext=(6, 6), fontsize=8, color=line.get_color())
        ax.set_xlabel("epoch")
        ax.set_ylabel(name)
        ax.set_title(f"{result.job_name}: {name} per epoch ({len(result.trials)} trial{'s' if len(result.trials) != 1 else ''})")
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.grid(True, alpha=0.3)
        if ax.lines:
            ax.legend(fontsize=7, loc="best")
        fig.tight_layout()
        fig.savefig(out, format="png")
    finally:
        plt.close(fig)
    return out


def _fmt(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.3g}"
    return str(value)
