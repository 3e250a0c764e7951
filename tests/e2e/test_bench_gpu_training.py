"""The GPU benchmark script stays runnable: its tiny CPU run measures every arm and writes its section."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def test_the_gpu_bench_runs_tiny_on_cpu_and_writes_its_section(ray_cluster: dict, tmp_path: Path) -> None:
    from bench.gpu_training import SECTION, main

    doc = tmp_path / "benchmarks.md"
    doc.write_text("# Benchmarks\n\n## Other\n\nkept\n")

    assert main(["--tiny", "--stages", "0,3", "--json", str(tmp_path / "r.json"), "--write-doc", str(doc)]) == 0

    result = json.loads((tmp_path / "r.json").read_text())
    assert [a["name"] for a in result["arms"]] == ["plain", "graft", "zero-0", "zero-3"]
    assert all(a["tokens_per_s"] > 0 for a in result["arms"])
    text = doc.read_text()
    assert SECTION in text and "## Other\n\nkept" in text
