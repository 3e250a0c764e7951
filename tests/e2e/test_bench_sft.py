"""The causal-LM SFT benchmark stays runnable: its tiny CPU run trains, evaluates and generates
with the real SmolLM2 and writes its section (kept apart from other sections)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def test_the_sft_bench_runs_tiny_on_cpu_and_writes_its_section(tmp_path: Path) -> None:
    from bench.sft import HEADING, main

    doc = tmp_path / "benchmarks.md"
    doc.write_text("# Benchmarks\n\n## Other\n\nkept\n")

    assert main(["--tiny", "--json", str(tmp_path / "r.json"), "--write-doc", str(doc)]) == 0

    result = json.loads((tmp_path / "r.json").read_text())
    assert result["device"] == "cpu" and result["steps"] == 2
    assert result["train_tokens_per_s"] > 0 and result["generation_tokens_per_s"] > 0
    assert math.isfinite(result["eval_loss_before"]) and math.isfinite(result["eval_loss_after"])
    assert result["eval_perplexity_after"] == pytest.approx(math.exp(result["eval_loss_after"]), rel=1e-3)
    text = doc.read_text()
    assert HEADING in text and "## Other\n\nkept" in text
