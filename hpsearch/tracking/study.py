"""Trials read back from MLflow as Optuna trials: the one mapping from a trial's params (MLflow's strings, or the
values a search holds) to the values its Optuna trial suggested.

Two readers use it: the searcher of a resumed, continued or warm-started search, told every earlier trial
before it proposes the next (:func:`hpsearch.execution.sampling.make_study`), and the figures' study
(:mod:`hpsearch.figures.study`). The layers are suggested as ``n_layers`` and ``units_i`` (one per layer the trial
has), or as one choice of encoded sizes (``"128-64"``), and recorded as ``n_layers`` and ``units_i`` either way.
"""

from __future__ import annotations

from typing import Any

import optuna
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution

from hpsearch.tracking.schema import FINISHED, Status, TrialRecord

__all__ = ["as_optuna_trial", "suggested_values"]


def as_optuna_trial(trial: TrialRecord, distributions: dict[str, BaseDistribution], metric: str, *,
                    fill: bool) -> optuna.trial.FrozenTrial | None:
    """The trial as an Optuna trial for ``study.add_trial``: its values under ``distributions`` and its result
    (a finished trial complete with its metric's last value, as Ray's ``OptunaSearch`` tells it; a failed one
    failed). None for a trial that cannot be placed.

    ``fill`` (the figures): every distribution gets a value, a layer the trial does not have counting as 0
    units, and a value outside its distribution widens it (a space file edited after the search ran). Without
    it (a searcher), the trial has exactly the params it suggested, under the distributions the searcher asks
    with, and a trial with a value outside them, or without a value the space searches, is None.
    """
    if trial.status not in FINISHED and trial.status != Status.FAILED:
        return None
    values = suggested_values(trial.params, distributions, fill=fill)
    if values is None:
        return None
    used = {name: _widened(distributions[name], value) if fill else distributions[name]
            for name, value in values.items()}
    attrs = {"trial": trial.name, "run_id": trial.run_id, "status": str(trial.status)}
    if trial.status == Status.FAILED:
        return optuna.trial.create_trial(params=values, distributions=used, state=optuna.trial.TrialState.FAIL,
                                         user_attrs=attrs)
    if trial.last(metric) is None:
        return None
    return optuna.trial.create_trial(params=values, distributions=used, value=trial.last(metric), user_attrs=attrs)


def suggested_values(params: dict[str, Any], distributions: dict[str, BaseDistribution], *,
                     fill: bool = False) -> dict[str, Any] | None:
    """The values a trial with these recorded params suggested under ``distributions`` (see
    :func:`as_optuna_trial` for ``fill``); None when they cannot be placed there."""
    if distributions and not params:
        return None  # a kill right after its run was created, before its params: it cannot be placed
    values: dict[str, Any] = {}
    for name, dist in distributions.items():
        value = _value(params, name, dist)
        if value is None and not fill and name.startswith("units_") and _layers_below(params, name):
            continue  # a layer this trial does not have: never suggested
        if value is None and fill and isinstance(dist, IntDistribution):
            value = 0
        if value is None or (not fill and not _holds(dist, value)):
            return None
        values[name] = value
    return values


def _value(params: dict[str, Any], name: str, dist: BaseDistribution) -> Any:
    """The value of ``name`` that the trial suggested, read from its recorded params; None when it has none."""
    if name == "layers" and "n_layers" in params:
        sizes = [str(params.get(f"units_{i}")) for i in range(int(float(params["n_layers"])))]
        return "-".join(sizes) or "none"
    raw = params.get(name)
    if raw is None:
        return None
    try:
        if isinstance(dist, IntDistribution):
            return int(float(raw))
        if isinstance(dist, FloatDistribution):
            return float(raw)
    except (TypeError, ValueError):
        return None
    return next((c for c in dist.choices if str(c) == str(raw)), raw)


def _layers_below(params: dict[str, Any], name: str) -> bool:
    """Whether ``units_i`` belongs to a layer the trial does not have (``i >= n_layers``)."""
    try:
        return int(name.removeprefix("units_")) >= int(float(params.get("n_layers", 0)))
    except ValueError:
        return False


def _holds(dist: BaseDistribution, value: Any) -> bool:
    """Whether ``value`` is one the distribution can suggest."""
    if isinstance(dist, CategoricalDistribution):
        return value in dist.choices
    if not dist.low <= value <= dist.high:
        return False
    return not isinstance(dist, IntDistribution) or (value - dist.low) % dist.step == 0


def _widened(dist: BaseDistribution, value: Any) -> BaseDistribution:
    """The distribution, grown to hold a value outside it (a space file edited after the search ran)."""
    if isinstance(dist, CategoricalDistribution) and value not in dist.choices:
        return CategoricalDistribution([*dist.choices, value])
    if isinstance(dist, (IntDistribution, FloatDistribution)) and not dist.low <= value <= dist.high:
        kind = type(dist)
        return kind(min(dist.low, value), max(dist.high, value), log=dist.log and value > 0)
    return dist
