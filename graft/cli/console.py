"""What `graft run` shows a person: phases, a live trial table, the summary and the endpoint."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from rich.console import Console
from rich.live import Live
from rich.table import Table

from graft.api import FineTuneJob
from graft.api.result import TrainingResult
from graft.api.spec import TASK_METRICS
from graft.jobs.events import (
    JobEvent,
    JobFinishedEvent,
    PhaseEvent,
    TrialEpochEvent,
    TrialFinishedEvent,
    TrialStartedEvent,
    TrialStoppedEvent,
)
from graft.jobs.progress import ProgressTracker

_METRICS = ("train_loss", "eval_loss", "eval_accuracy", "eval_f1")


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 1e-2 else f"{value:.4f}"
    return str(value)


@dataclass
class TrialRow:
    trial_id: str
    config: dict[str, Any]
    epochs: int
    epoch: int = 0
    metrics: dict[str, float] = field(default_factory=dict)
    status: str = "running"


class TrialTable:
    """Receives job events (from the driver thread) and keeps a table of trials up to date."""

    def __init__(self, console: Console, job: FineTuneJob, plain: bool) -> None:
        self.console = console
        self.plain = plain
        self.metric = job.spec.tuning.metric
        self.metrics = TASK_METRICS.get(str(job.spec.task), _METRICS)
        self.rows: dict[str, TrialRow] = {}
        self.live: Live | None = None
        # The same progress the operator writes to status.progress (graft.jobs.progress).
        self.progress = ProgressTracker(job.spec.tuning.num_trials, job.spec.score_mode, job.spec.training.epochs)
        self.score_metric = job.spec.score_metric

    def progress_line(self) -> str:
        """`trials 3/8 (2 running), best eval_accuracy 0.88 (trial t2), epoch 2/3, 41s elapsed, ETA 1m30s`."""
        p = self.progress.snapshot()
        parts = [f"trials {p.trials}"]
        if p.best_score is not None:
            parts.append(f"best {self.score_metric} {_fmt(p.best_score)} (trial {p.best_trial})")
        if p.epoch is not None:
            parts.append(f"epoch {p.epoch}/{p.epochs}")
        parts.append(f"{p.elapsed_seconds}s elapsed")
        if p.eta_seconds is not None:
            parts.append(f"ETA {p.eta_seconds // 60}m{p.eta_seconds % 60:02d}s")
        return ", ".join(parts)

    def on_event(self, event: JobEvent) -> None:
        self.progress.apply(event)
        if isinstance(event, PhaseEvent):
            took = f" (previous phase {event.seconds:.1f}s)" if event.seconds else ""
            self._print(f"[bold cyan]phase[/] {event.phase}{took} {event.message}")
        elif isinstance(event, TrialStartedEvent):
            self.rows[event.trial_id] = TrialRow(event.trial_id, dict(event.config), event.epochs)
            self._print(f"trial {event.trial_id} started: {self._config(event.config)}")
        elif isinstance(event, TrialEpochEvent):
            row = self._row(event.trial_id, event.config, event.epochs)
            row.epoch, row.metrics = event.epoch, dict(event.metrics)
            metrics = " ".join(f"{k}={_fmt(event.metrics[k])}" for k in self.metrics if k in event.metrics)
            self._print(f"trial {event.trial_id} epoch {event.epoch}/{event.epochs}: {metrics}")
        elif isinstance(event, TrialStoppedEvent):
            row = self._row(event.trial_id, {}, event.epochs)
            who = "ASHA" if event.reason == "scheduler" else "early stopping"
            row.status = f"stopped by {who} after epoch {event.epoch}"
            self._print(f"[yellow]trial {event.trial_id} stopped by {who} after epoch {event.epoch}/{event.epochs}[/]")
        elif isinstance(event, TrialFinishedEvent):
            row = self._row(event.trial_id, {}, event.epochs_completed)
            if event.status == "failed":
                row.status = "failed"
                self._print(f"[red]trial {event.trial_id} failed: {event.error}[/]")
            elif not row.status.startswith("stopped"):
                row.status = event.status.replace("_", " ")
        elif isinstance(event, JobFinishedEvent):
            self._print(f"[bold]training {event.status}[/] {event.message}")
        if isinstance(event, (TrialFinishedEvent, TrialStoppedEvent)):
            self._print(f"[cyan]progress[/] {self.progress_line()}")
        self._refresh()

    def _row(self, trial_id: str, config: dict[str, Any], epochs: int) -> TrialRow:
        if trial_id not in self.rows:
            self.rows[trial_id] = TrialRow(trial_id, dict(config), epochs)
        return self.rows[trial_id]

    @staticmethod
    def _config(config: dict[str, Any]) -> str:
        return ", ".join(f"{k}={_fmt(v)}" for k, v in config.items()) or "(spec defaults)"

    def _print(self, markup: str) -> None:
        if self.plain:
            self.console.print(markup, highlight=False)
        elif self.live is not None:
            self.live.console.print(markup, highlight=False)

    def render(self) -> Table:
        table = Table(title="trials", caption=self.progress_line(), expand=False)
        table.add_column("trial")
        table.add_column("hyperparameters")
        table.add_column("epoch", justify="right")
        for name in self.metrics:
            table.add_column(name, justify="right", style="bold" if name == self.metric else None)
        table.add_column("status")
        for row in self.rows.values():
            table.add_row(
                row.trial_id,
                self._config(row.config),
                f"{row.epoch}/{row.epochs}",
                *(_fmt(row.metrics[m]) if m in row.metrics else "-" for m in self.metrics),
                row.status,
            )
        return table

    def _refresh(self) -> None:
        if self.live is not None:
            self.live.update(self.render())


class RunConsole:
    def __init__(self, plain: bool) -> None:
        self.plain = plain
        # Plain mode (CI, pipes) prints lines; give tables room instead of the 80-column default.
        self.console = Console(file=sys.stdout, force_terminal=False if plain else None, width=160 if plain else None)

    def phase(self, name: str, message: str) -> None:
        self.console.print(f"[bold cyan]==>[/] [bold]{name}[/]: {message}", highlight=False)

    def info(self, message: str) -> None:
        self.console.print(f"    {message}", highlight=False)

    def error(self, message: str) -> None:
        self.console.print(f"[bold red]error:[/] {message}", highlight=False)

    def done(self, message: str) -> None:
        self.console.print(f"[bold green]done:[/] {message}", highlight=False)

    @contextmanager
    def trials(self, job: FineTuneJob) -> Iterator[TrialTable]:
        table = TrialTable(self.console, job, self.plain)
        if self.plain:
            yield table
            self.console.print(table.render())
            return
        with Live(table.render(), console=self.console, refresh_per_second=2) as live:
            table.live = live
            yield table
            table.live = None

    def summary(self, result: TrainingResult, seconds: float) -> None:
        stopped = [t for t in result.trials if t.status == "stopped_early"]
        self.phase("result", f"{len(result.trials)} trial(s) in {seconds:.0f}s, {len(stopped)} stopped early")
        for trial in stopped:
            self.info(f"{trial.trial_id}: stopped after epoch {trial.stopped_at_epoch} of its run")
        if result.best_trial_id is None:
            return
        config = ", ".join(f"{k}={_fmt(v)}" for k, v in result.best_config.items()) or "spec defaults"
        metrics = " ".join(f"{k}={_fmt(v)}" for k, v in result.best_metrics.items())
        self.console.print(
            f"[bold green]best trial[/] {result.best_trial_id} ({config}): "
            f"{result.metric}={_fmt(result.best_score)}  {metrics}",
            highlight=False,
        )
        self.info(f"exported model: {result.model_uri}")

    def endpoint(self, url: str, text: str, prediction: dict[str, Any], expected: str | None = None, image: bool = False) -> None:
        shown = text if len(text) <= 160 else text[:157] + "..."
        scores = ", ".join(f"{k}={v:.3f}" for k, v in prediction.get("scores", {}).items())
        self.console.print(f"[bold green]endpoint[/] {url}  (POST /predict, GET /healthz)", highlight=False)
        self.info(f"sample: {shown!r}")
        verdict = ""
        if expected is not None:
            verdict = "  [green]correct[/]" if prediction.get("label") == expected else f"  [red]true label: {expected}[/]"
        self.console.print(f"    prediction: {prediction.get('label')}  ({scores}){verdict}", highlight=False)
        if image:
            self.info(f"try: curl -s -X POST {url.rstrip('/')}/predict -H 'content-type: image/png' --data-binary @IMAGE.png")
        else:
            self.info(f"try: curl -s -X POST {url.rstrip('/')}/predict -H 'content-type: application/json' -d '{{\"text\": \"a wonderful film\"}}'")
