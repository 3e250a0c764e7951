"""bench/serving.py's table: the added latency and the batching ratio come from the measured arms."""

from __future__ import annotations

import pytest

from bench.serving import percentile, render

pytestmark = pytest.mark.unit


def _level(concurrency: int, rps: float, p50: float, p99: float) -> dict[str, float]:
    return {"concurrency": concurrency, "requests": 100, "rps": rps, "p50_ms": p50, "p99_ms": p99}


RESULT = {
    "cpus": 1,
    "baseline": {"requests": 100, "rps": 50.0, "p50_ms": 20.0, "p99_ms": 30.0},
    "arms": [
        {"max_batch_size": 8, "levels": [_level(1, 30.0, 33.0, 40.0), _level(16, 90.0, 170.0, 260.0)]},
        {"max_batch_size": 1, "levels": [_level(1, 32.0, 31.0, 45.0), _level(16, 40.0, 400.0, 520.0)]},
    ],
    "load_before": (1.0, 1.0, 1.0),
    "load_after": (2.0, 1.0, 1.0),
}


def test_the_added_latency_is_the_unbatched_http_path_minus_the_in_process_call() -> None:
    text = render(RESULT, "python bench/serving.py")
    assert "| added by HTTP + Serve | +11.0 | +15.0 |" in text


def test_the_batching_ratio_is_requests_per_second_on_over_off_at_each_concurrency() -> None:
    text = render(RESULT, "python bench/serving.py")
    assert "| 16 | 40.0 | 90.0 | 2.25 | 400 | 170 | 520 | 260 |" in text


def test_the_99th_percentile_of_a_hundred_values_is_the_99th_smallest() -> None:
    assert percentile([float(v) for v in range(100, 0, -1)], 0.99) == 99.0
