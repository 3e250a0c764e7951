"""bench/zero_stages.py's table: scaling efficiency is 2-worker samples/s over twice the 1-worker figure."""

from __future__ import annotations

import pytest

from bench.zero_stages import render

pytestmark = pytest.mark.unit


def _row(label: str, workers: int, engine: str, sps: float) -> dict[str, object]:
    return {"label": label, "workers": workers, "engine": engine, "samples_per_s": sps, "fit_seconds": 60.0, "peak_rss_mib": 900.0}


RESULT = {
    "work": {"steps": 12, "epochs": 3, "batch_size": 8, "max_length": 128},
    "rows": [_row("1 worker", 1, "single", 10.0), _row("2 workers, ZeRO-2", 2, "deepspeed", 15.0)],
    "load_before": (1.0, 1.0, 1.0),
    "load_after": (1.5, 1.0, 1.0),
}


def test_the_two_worker_row_shows_its_scaling_efficiency() -> None:
    assert "| 2 workers, ZeRO-2 | deepspeed | 15.0 | 0.75 | 900 | 60 |" in render(RESULT, "python bench/zero_stages.py")


def test_the_one_worker_row_has_no_scaling_efficiency() -> None:
    assert "| 1 worker | single | 10.0 | - | 900 | 60 |" in render(RESULT, "python bench/zero_stages.py")
