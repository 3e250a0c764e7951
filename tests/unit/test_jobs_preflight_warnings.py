"""Preflight warnings (the job runs, but slower or saving less than it could) and the ASHA arithmetic."""

from __future__ import annotations

import pytest

from graft.api.spec import FineTuneJobSpec
from graft.jobs.deepspeed_config import cpu_bf16_is_fast, cpu_has_native_bf16
from graft.jobs.preflight import concurrency_warning, warnings
from graft.jobs.search_space import asha_epoch_fraction, asha_rungs

pytestmark = pytest.mark.unit

NO_BF16 = {"avx2", "avx512f"}
AMX = {"avx512f", "avx512_bf16", "amx_tile", "amx_bf16"}


def spec(**parts: object) -> FineTuneJobSpec:
    return FineTuneJobSpec.model_validate({"model": {"source": "/m"}, "dataset": {"source": "/d.jsonl"}, **parts})


def test_bf16_on_a_cpu_without_bf16_instructions_is_reported_as_emulated() -> None:
    found = warnings(spec(training={"precision": "bf16"}), flags=NO_BF16)
    assert any(w.startswith("spec.training.precision: bf16 on this CPU is emulated") for w in found)


def test_bf16_with_native_support_or_on_gpus_is_not_reported() -> None:
    assert warnings(spec(training={"precision": "bf16"}), flags=AMX) == []
    assert warnings(spec(training={"precision": "bf16"}, resources={"gpusPerWorker": 1}), flags=NO_BF16) == []


def test_auto_precision_takes_bf16_only_where_the_cpu_has_amx() -> None:
    assert cpu_bf16_is_fast(AMX) and not cpu_bf16_is_fast({"avx512_bf16"})
    assert cpu_has_native_bf16({"avx512_bf16"}) and not cpu_has_native_bf16(NO_BF16)


def test_an_asha_grace_period_that_leaves_no_rung_is_reported() -> None:
    job = spec(training={"epochs": 2}, tuning={"numTrials": 4, "scheduler": {"gracePeriod": 2}, "searchSpace": {"learningRate": {"type": "loguniform", "low": 1e-5, "high": 1e-3}}})
    assert any("leaves no rung" in w for w in warnings(job, flags=AMX))


def test_trials_that_cannot_run_side_by_side_are_reported_with_the_numbers() -> None:
    job = spec(resources={"workers": 2, "cpusPerWorker": 1}, tuning={"numTrials": 4, "maxConcurrentTrials": 2, "searchSpace": {"learningRate": {"type": "loguniform", "low": 1e-5, "high": 1e-3}}})
    message = concurrency_warning(job, {"CPU": 2.0})
    assert message == (
        "spec.tuning.maxConcurrentTrials: 2 trials at once need 4 CPUs (2 worker(s) x 1 CPU each); the Ray cluster has 2, so at most 1 run at a time"
    )
    assert concurrency_warning(job, {"CPU": 4.0}) is None


@pytest.mark.parametrize(
    ("max_t", "grace", "rf", "rungs", "fraction"),
    [
        (2, 1, 2, [1], 0.75),  # one rung: half the trials stop after epoch 1 of 2
        (3, 1, 3, [1], (1 + 2 / 3) / 3),
        (9, 1, 3, [1, 3], (1 + 2 / 3 + 6 / 9) / 9),
        (3, 3, 2, [], 1.0),
    ],
)
def test_asha_rungs_and_expected_epochs(max_t: int, grace: int, rf: float, rungs: list[int], fraction: float) -> None:
    assert asha_rungs(max_t, grace, rf) == rungs
    assert asha_epoch_fraction(max_t, grace, rf) == pytest.approx(fraction)
