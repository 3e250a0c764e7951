"""decide_promotion: should a finished job's model replace what an endpoint serves? (pure)"""

from __future__ import annotations

import pytest

from graft.api import TrainingResult
from graft.api.endpoint import ServedModel
from graft.operator.promotion import decide_promotion

pytestmark = pytest.mark.unit


def result(score: float | None = 0.9, status: str = "succeeded", metric: str = "eval_accuracy", mode: str = "max",
           uri: str | None = "s3://b/demo/model") -> TrainingResult:
    return TrainingResult(job_name="demo", status=status, metric=metric, mode=mode, best_score=score, best_trial_id="t1",
                          model_uri=uri, started_at="a", finished_at="b", message="boom" if status == "failed" else "")


SERVED = ServedModel(uri="s3://b/old", metric="eval_accuracy", score=0.85, mode="max", version=2)


def test_if_better_promotes_a_better_model() -> None:
    d = decide_promotion("ifBetter", SERVED, result(0.9))
    assert d.promote and d.decision == "promoted" and "0.9 vs served 0.85" in d.reason


def test_if_better_refuses_a_worse_or_equal_model() -> None:
    assert not decide_promotion("ifBetter", SERVED, result(0.8)).promote
    assert not decide_promotion("ifBetter", SERVED, result(0.85)).promote


def test_if_better_respects_min_mode() -> None:
    served = ServedModel(uri="s3://b/old", metric="eval_loss", score=0.5, mode="min")
    assert decide_promotion("ifBetter", served, result(0.4, metric="eval_loss", mode="min")).promote
    assert not decide_promotion("ifBetter", served, result(0.6, metric="eval_loss", mode="min")).promote


def test_if_better_refuses_a_different_metric() -> None:
    d = decide_promotion("ifBetter", SERVED, result(0.1, metric="eval_loss", mode="min"))
    assert not d.promote and "not comparable" in d.reason


def test_always_promotes_even_a_worse_model() -> None:
    assert decide_promotion("always", SERVED, result(0.1)).promote


def test_manual_only_records() -> None:
    d = decide_promotion("manual", None, result())
    assert not d.promote and d.decision == "recorded" and "s3://b/demo/model" in d.reason


def test_first_model_is_promoted_and_failed_result_never() -> None:
    assert decide_promotion("ifBetter", None, result()).promote
    assert not decide_promotion("always", None, result(status="failed", uri=None)).promote


