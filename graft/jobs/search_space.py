"""Translate `spec.tuning.searchSpace` into a Ray Tune param space, and apply a sampled config.

Keys stay the wire names the spec uses (`learningRate`, `lora.r`), so trial configs read the same
as the spec. `randint` bounds are inclusive on both ends (Tune's `randint` excludes `high`; we add 1).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ray import tune

from graft.api.spec import SEARCHABLE_FIELDS, SearchParameter, TrainingSpec, TuningSpec


def domain(param: SearchParameter) -> Any:
    """The Tune sampling domain of one search parameter."""
    if param.type == "choice":
        return tune.choice(list(param.values or []))
    assert param.low is not None and param.high is not None  # checked by the spec model
    if param.type == "uniform":
        return tune.uniform(param.low, param.high)
    if param.type == "loguniform":
        return tune.loguniform(param.low, param.high)
    if param.type == "randint":
        return tune.randint(int(param.low), int(param.high) + 1)
    raise ValueError(f"unknown search parameter type {param.type!r}")


def param_space(tuning: TuningSpec) -> dict[str, Any]:
    """`{wire_name: tune domain}` for every entry of the search space."""
    return {name: domain(param) for name, param in sorted(tuning.search_space.items())}


def _set(tree: dict[str, Any], attr_path: str, value: Any) -> None:
    *parents, leaf = attr_path.split(".")
    node = tree
    for part in parents:
        if node.get(part) is None:
            raise KeyError(part)
        node = node[part]
    current = node.get(leaf)
    if isinstance(current, int) and not isinstance(current, bool) and isinstance(value, float):
        value = int(round(value))
    node[leaf] = value


def apply_config(training: TrainingSpec, config: Mapping[str, Any]) -> TrainingSpec:
    """A validated copy of `training` with the sampled values set (keys: wire names, e.g. `lora.r`).

    Keys that are not searchable fields are ignored (Tune adds its own bookkeeping keys).
    Raises `ValueError` for a `lora.*` key when LoRA is not enabled, or a value out of range.
    """
    tree = training.model_dump()
    for key, value in config.items():
        attr = SEARCHABLE_FIELDS.get(key)
        if attr is None:
            continue
        try:
            _set(tree, attr, value)
        except KeyError as exc:
            raise ValueError(f"spec.tuning.searchSpace.{key} needs spec.training.{exc.args[0]} to be set") from exc
    return TrainingSpec.model_validate(tree)


def describe(config: Mapping[str, Any]) -> dict[str, float | int | str | bool]:
    """Only the searched keys of a trial config, with plain scalar values (for results and events)."""
    out: dict[str, float | int | str | bool] = {}
    for key, value in config.items():
        if key not in SEARCHABLE_FIELDS:
            continue
        if hasattr(value, "item"):
            value = value.item()
        out[key] = value if isinstance(value, (bool, int, float, str)) else str(value)
    return out


def asha_rungs(max_t: int, grace_period: int, reduction_factor: float) -> list[int]:
    """The epochs at which ASHA compares trials (Ray's milestones: grace x rf^k below max_t)."""
    rungs, t = [], float(grace_period)
    while t < max_t:
        rungs.append(int(t))
        t *= reduction_factor
    return rungs


def asha_epoch_fraction(max_t: int, grace_period: int, reduction_factor: float) -> float:
    """Expected epochs per trial under ASHA as a fraction of max_t, for many trials (1/rf promoted at each rung)."""
    rungs = asha_rungs(max_t, grace_period, reduction_factor)
    if not rungs:
        return 1.0
    edges = [*rungs, max_t]
    total = float(edges[0])
    for k in range(len(rungs)):
        total += (edges[k + 1] - edges[k]) / reduction_factor ** (k + 1)
    return total / max_t
