"""An in-memory Optuna study rebuilt from a finished search, for Optuna's plots and importance evaluators.

The search's own study lives inside Ray's ``OptunaSearch`` and is gone when the search ends; MLflow holds what
it needs: the space as Optuna's distribution JSON (the parent run's ``space.*`` params) and every trial's params
and last metric value. Like Ray's ``OptunaSearch``, a trial that ASHA stopped counts as complete with its last
value, a failed trial not at all.

Conditional layer widths: ``layers(1, 3, units=(16, 256))`` gives ``units_1`` only to trials with two layers or
more (the space records ``n_layers`` and ``units_0`` to ``units_2``). Optuna's importance evaluators use the
params every trial has, so a layer a trial does not have counts as 0 units; every searched hyperparameter then
gets an importance.
"""

from __future__ import annotations

import contextlib
from typing import Any

import optuna
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
    json_to_distribution,
)

from hpsearch.tracking.reader import SearchHistory
from hpsearch.tracking.schema import TrialRecord

__all__ = ["describe_space", "rebuild_study", "searched_distributions"]


def rebuild_study(history: SearchHistory) -> optuna.Study:
    """A study holding the search's scored trials with the space's distributions."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    direction = "maximize" if history.mode == "max" else "minimize"
    study = optuna.create_study(direction=direction, study_name=history.run_name)
    distributions = searched_distributions(history.space())
    for trial in history.scored():
        if distributions and not trial.params:
            continue  # a kill right after its run was created, before its params: it cannot be placed
        params = {name: _value(trial, name, dist) for name, dist in distributions.items()}
        study.add_trial(optuna.trial.create_trial(
            params=params,
            distributions={name: _widened(dist, params[name]) for name, dist in distributions.items()},
            value=trial.last(history.metric),
            user_attrs={"trial": trial.name, "run_id": trial.run_id, "status": trial.status},
        ))
    return study


def searched_distributions(space: dict[str, str]) -> dict[str, BaseDistribution]:
    """The searched params' Optuna distributions, from the parent run's ``space.*`` params (Optuna's JSON).

    Widths of layers not every trial has (``units_i`` for ``i >= n_layers.low``) may be 0: absent.
    """
    distributions: dict[str, BaseDistribution] = {}
    for name, text in space.items():
        with contextlib.suppress(ValueError, KeyError, TypeError):  # a fixed value: not searched
            distributions[name] = json_to_distribution(text)
    depth = distributions.get("n_layers")
    for name, dist in distributions.items():
        if depth is not None and name.startswith("units_") and int(name.removeprefix("units_")) >= depth.low:
            distributions[name] = IntDistribution(0, dist.high)
    return distributions


def describe_space(space: dict[str, str]) -> dict[str, str]:
    """The space as a reader writes it: ``loguniform(0.0001, 0.1)``, ``choice(['adam', 'sgd'])``, fixed values."""
    searched = searched_distributions(space)
    return {name: _describe(searched[name]) if name in searched else text for name, text in space.items()}


def _describe(dist: BaseDistribution) -> str:
    if isinstance(dist, CategoricalDistribution):
        return f"choice({list(dist.choices)!r})"
    kind = "randint" if isinstance(dist, IntDistribution) else "loguniform" if dist.log else "uniform"
    log = ", log" if isinstance(dist, IntDistribution) and dist.log else ""
    return f"{kind}({dist.low}, {dist.high}{log})"


def _value(trial: TrialRecord, name: str, dist: BaseDistribution) -> Any:
    params = trial.params
    if name == "layers":
        n_layers = int(params.get("n_layers", 0))
        return "-".join(params[f"units_{i}"] for i in range(n_layers)) or "none"
    raw = params.get(name)
    if isinstance(dist, IntDistribution):
        return int(float(raw)) if raw is not None else 0
    if isinstance(dist, FloatDistribution):
        return float(raw)
    return next((c for c in dist.choices if str(c) == raw), raw)


def _widened(dist: BaseDistribution, value: Any) -> BaseDistribution:
    """The distribution, grown to hold a value outside it (a space file edited after the search ran)."""
    if isinstance(dist, CategoricalDistribution) and value not in dist.choices:
        return CategoricalDistribution([*dist.choices, value])
    if isinstance(dist, (IntDistribution, FloatDistribution)) and not dist.low <= value <= dist.high:
        kind = type(dist)
        return kind(min(dist.low, value), max(dist.high, value), log=dist.log and value > 0)
    return dist
