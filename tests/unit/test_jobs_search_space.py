"""Search space -> Ray Tune domains, and sampled configs applied back onto the training spec."""

from __future__ import annotations

import pytest
from ray.tune.search.sample import Categorical, Float, Integer

from graft.api.spec import FineTuneJobSpec, TrainingSpec, TuningSpec
from graft.jobs.search_space import apply_config, describe, param_space

pytestmark = pytest.mark.unit


def space(**params: dict) -> TuningSpec:
    return TuningSpec.model_validate({"searchSpace": params})


def test_each_parameter_type_maps_to_its_tune_domain() -> None:
    ps = param_space(
        space(
            learningRate={"type": "loguniform", "low": 1e-5, "high": 1e-3},
            warmupRatio={"type": "uniform", "low": 0.0, "high": 0.2},
            batchSize={"type": "choice", "values": [8, 16]},
            **{"lora.r": {"type": "randint", "low": 4, "high": 16}},
        )
    )
    assert isinstance(ps["learningRate"], Float) and ps["learningRate"].lower == 1e-5 and ps["learningRate"].upper == 1e-3
    assert type(ps["learningRate"].sampler).__name__ == "_LogUniform"
    assert isinstance(ps["warmupRatio"], Float) and type(ps["warmupRatio"].sampler).__name__ == "_Uniform"
    assert isinstance(ps["batchSize"], Categorical) and ps["batchSize"].categories == [8, 16]
    assert isinstance(ps["lora.r"], Integer) and (ps["lora.r"].lower, ps["lora.r"].upper) == (4, 17)  # inclusive high


def test_randint_samples_stay_within_inclusive_bounds() -> None:
    domain = param_space(space(epochs={"type": "randint", "low": 1, "high": 2}))["epochs"]
    assert set(domain.sample(size=200)) == {1, 2}


def test_apply_config_sets_fields_and_dotted_lora_keys() -> None:
    base = TrainingSpec.model_validate({"lora": {"r": 8}, "learningRate": 5e-5})
    out = apply_config(base, {"learningRate": 1e-4, "lora.r": 16, "lora.dropout": 0.1})
    assert out.learning_rate == 1e-4 and out.lora is not None and out.lora.r == 16 and out.lora.dropout == 0.1
    assert base.learning_rate == 5e-5 and base.lora is not None and base.lora.r == 8  # the original is untouched


def test_apply_config_rounds_floats_for_integer_fields() -> None:
    assert apply_config(TrainingSpec(), {"batchSize": 15.6}).batch_size == 16


def test_apply_config_ignores_tune_bookkeeping_keys() -> None:
    assert apply_config(TrainingSpec(), {"learningRate": 1e-4, "__trial_index__": 3}).learning_rate == 1e-4


def test_lora_key_without_lora_is_an_error() -> None:
    with pytest.raises(ValueError, match="spec.training.lora"):
        apply_config(TrainingSpec(), {"lora.r": 4})


def test_out_of_range_value_fails_validation() -> None:
    with pytest.raises(ValueError):
        apply_config(TrainingSpec(), {"learningRate": 5.0})


def test_describe_keeps_only_searched_scalars() -> None:
    import numpy as np

    assert describe({"learningRate": np.float64(1e-4), "lora.r": np.int64(4), "other": 1}) == {"learningRate": 1e-4, "lora.r": 4}


def _spec(**tuning: object) -> FineTuneJobSpec:
    return FineTuneJobSpec.model_validate({"model": {"source": "m"}, "dataset": {"source": "d.csv"}, "training": {"epochs": 3}, "tuning": tuning})


def test_asha_uses_epochs_as_time_and_the_configured_rungs() -> None:
    from ray.tune.schedulers import ASHAScheduler

    from graft.jobs.tune import make_scheduler

    sched = make_scheduler(_spec(scheduler={"type": "asha", "gracePeriod": 1, "reductionFactor": 3}))
    assert isinstance(sched, ASHAScheduler)
    assert sched._time_attr == "epoch" and sched._max_t == 3 and sched._reduction_factor == 3


def test_asha_max_t_follows_a_searched_epoch_count() -> None:
    from graft.jobs.tune import max_epochs

    assert max_epochs(_spec(searchSpace={"epochs": {"type": "choice", "values": [2, 5]}})) == 5


def test_optuna_search_is_seeded_and_random_search_keeps_the_concurrency_limit() -> None:
    from ray.tune.search.basic_variant import BasicVariantGenerator
    from ray.tune.search.optuna import OptunaSearch

    from graft.jobs.tune import make_search_alg

    space = {"learningRate": {"type": "loguniform", "low": 1e-5, "high": 1e-3}}
    assert isinstance(make_search_alg(_spec(searchAlgorithm="optuna", searchSpace=space)), OptunaSearch)
    random_search = make_search_alg(_spec(searchSpace=space, maxConcurrentTrials=2))
    assert isinstance(random_search, BasicVariantGenerator) and random_search.max_concurrent == 2


def test_trial_drivers_get_one_unit_each_of_the_custom_resource() -> None:
    from graft.jobs.tune import TRIAL_DRIVER_RESOURCE, ray_init_resources

    assert ray_init_resources(_spec(maxConcurrentTrials=3)) == {TRIAL_DRIVER_RESOURCE: 3.0}
