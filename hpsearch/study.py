"""An in-memory Optuna study rebuilt from a finished search, for Optuna's plots and importance evaluators.

The search's own study lives inside Ray's ``OptunaSearch`` and is gone when the search ends; MLflow holds what
it needs: the space as the space file wrote it (the parent run's ``space.*`` params) and every trial's params
and last metric value. Like Ray's ``OptunaSearch``, a trial that ASHA stopped counts as complete with its last
value, a failed trial not at all.

Conditional layer widths: ``layers(1, 3, units=(16, 256))`` gives ``units_1`` only to trials with two layers or
more. Optuna's importance evaluators use the params every trial has, so a layer a trial does not have counts as
0 units; every searched hyperparameter then gets an importance.
"""

from __future__ import annotations

import ast
from typing import Any

import optuna
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution

from hpsearch.history import SearchHistory, TrialHistory

__all__ = ["rebuild_study", "searched_distributions"]


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
    """Optuna distributions of the searched params, from their descriptions (``"loguniform(0.0001, 0.1)"``)."""
    distributions: dict[str, BaseDistribution] = {}
    for name, text in space.items():
        call = _parse_call(text)
        if call is None:
            continue  # a fixed value: not searched
        kind, args, kwargs = call
        if kind == "uniform":
            distributions[name] = FloatDistribution(*args)
        elif kind == "loguniform":
            distributions[name] = FloatDistribution(*args, log=True)
        elif kind == "randint":
            distributions[name] = IntDistribution(*args)
        elif kind == "choice":
            distributions[name] = CategoricalDistribution([_scalar(o) for o in args[0]])
        elif kind == "layers":
            distributions.update(_layer_distributions(args, kwargs))
    return distributions


def _layer_distributions(args: list[Any], kwargs: dict[str, Any]) -> dict[str, BaseDistribution]:
    if "choices" in kwargs:
        return {"layers": CategoricalDistribution(["-".join(map(str, c)) or "none" for c in kwargs["choices"]])}
    if "sizes" in kwargs:
        return {}
    low_n, high_n = args[0], args[1]
    low_u, high_u = kwargs["units"]
    result: dict[str, BaseDistribution] = {"n_layers": IntDistribution(low_n, high_n)}
    for i in range(high_n):  # layers every trial has keep their log scale; the others may be 0 (absent)
        result[f"units_{i}"] = IntDistribution(low_u, high_u, log=True) if i < low_n else IntDistribution(0, high_u)
    return result


def _value(trial: TrialHistory, name: str, dist: BaseDistribution) -> Any:
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


def _parse_call(text: str) -> tuple[str, list[Any], dict[str, Any]] | None:
    """``"choice([32, 64])"`` -> ``("choice", [[32, 64]], {})``; None for a plain value."""
    try:
        node = ast.parse(text, mode="eval").body
    except SyntaxError:
        return None
    if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)):
        return None
    if node.func.id not in ("uniform", "loguniform", "randint", "choice", "layers"):
        return None
    args = [ast.literal_eval(a) for a in node.args]
    kwargs = {k.arg: ast.literal_eval(k.value) for k in node.keywords if k.arg}
    return node.func.id, args, kwargs


def _scalar(option: Any) -> Any:
    """Optuna's categorical choices hold scalars only (None, bool, int, float, str)."""
    return option if option is None or isinstance(option, (bool, int, float, str)) else str(option)
