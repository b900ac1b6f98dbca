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

import optuna
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    IntDistribution,
    json_to_distribution,
)

from hpsearch.tracking.reader import SearchHistory
from hpsearch.tracking.study import as_optuna_trial

__all__ = ["describe_space", "rebuild_study", "searched_distributions"]


def rebuild_study(history: SearchHistory) -> optuna.Study:
    """A study holding the search's scored trials with the space's distributions."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    direction = "maximize" if history.mode == "max" else "minimize"
    study = optuna.create_study(direction=direction, study_name=history.run_name)
    distributions = searched_distributions(history.space())
    for trial in history.scored():
        frozen = as_optuna_trial(trial, distributions, history.metric, fill=True)
        if frozen is not None:
            study.add_trial(frozen)
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
    """The space as the space file wrote it: ``loguniform(0.0001, 0.1)``, ``choice(['adam', 'sgd'])``,
    ``layers(1, 3, units=(16, 256))`` (recorded as ``n_layers`` and one ``units_i`` per layer),
    ``layers(choices=[[32], [64, 32]])`` (recorded as Optuna's choices ``32``, ``64-32``), fixed values."""
    searched = searched_distributions(space)
    described = {}
    for name, text in space.items():
        if name == "n_layers" and name in searched and "units_0" in searched:
            units = json_to_distribution(space["units_0"])  # as recorded: every layer's widths are the same
            depth = searched[name]
            described["layers"] = f"layers({depth.low}, {depth.high}, units=({units.low}, {units.high}))"
        elif name == "layers" and isinstance(searched.get(name), CategoricalDistribution):  # sizes as "64-32"
            choices = [[int(u) for u in str(c).split("-")] if c != "none" else [] for c in searched[name].choices]
            described[name] = f"layers(choices={choices})"
        elif not (name.startswith("units_") and "n_layers" in searched):
            described[name] = _describe(searched[name]) if name in searched else text
    return described


def _describe(dist: BaseDistribution) -> str:
    if isinstance(dist, CategoricalDistribution):
        return f"choice({list(dist.choices)!r})"
    kind = "randint" if isinstance(dist, IntDistribution) else "loguniform" if dist.log else "uniform"
    log = ", log" if isinstance(dist, IntDistribution) and dist.log else ""
    return f"{kind}({dist.low}, {dist.high}{log})"
