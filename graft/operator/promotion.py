"""Promotion decisions: should a finished job's model replace what an endpoint serves? Pure."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from graft.api.endpoint import ServedModel
from graft.api.result import TrainingResult

Policy = Literal["always", "ifBetter", "manual"]


@dataclass(frozen=True)
class Decision:
    promote: bool
    decision: Literal["promoted", "refused", "recorded"]
    reason: str


def _fmt(x: float | None) -> str:
    return "none" if x is None else f"{x:.4g}"


def decide_promotion(policy: Policy, current: ServedModel | None, result: TrainingResult) -> Decision:
    """`always`: promote any successful model; `ifBetter`: only a strictly better score on the same
    metric (in the metric's mode); `manual`: never, record the candidate for a person to promote."""
    if result.status != "succeeded" or not result.model_uri:
        return Decision(False, "refused", "the job produced no model to promote")
    if policy == "manual":
        return Decision(
            False, "recorded",
            f"promotion is manual: set the endpoint's spec.model.uri to {result.model_uri} to serve it",
        )
    if current is None:
        return Decision(True, "promoted", f"first model of the endpoint ({result.metric} {_fmt(result.best_score)})")
    if current.uri == result.model_uri:
        return Decision(False, "refused", "the endpoint already serves this model")
    if policy == "always":
        return Decision(True, "promoted", f"promotion: always (was {current.metric} {_fmt(current.score)})")
    if current.metric is not None and current.metric != result.metric:
        return Decision(
            False, "refused",
            f"the endpoint's model was scored by {current.metric}, this job by {result.metric}; "
            "scores are not comparable (use serving.promotion: always to replace it)",
        )
    if result.best_score is None:
        return Decision(False, "refused", "the job reported no score to compare")
    if current.score is None:
        return Decision(True, "promoted", f"the served model has no score; new {result.metric} {_fmt(result.best_score)}")
    better = result.best_score > current.score if result.mode == "max" else result.best_score < current.score
    cmp = f"{result.metric} {_fmt(result.best_score)} vs served {_fmt(current.score)} ({result.mode})"
    if better:
        return Decision(True, "promoted", f"better: {cmp}")
    return Decision(False, "refused", f"not better: {cmp}")
