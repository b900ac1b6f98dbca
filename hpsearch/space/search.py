"""The :class:`Search` a space file defines: its fields, checked when it is built, and the space it searches.

Everything is validated when ``Search(...)`` is built, so a mistake is reported with the field's name before
Ray, the data or the tracking store are touched.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

from hpsearch.errors import SpaceError
from hpsearch.space.checks import PARAM_CHECKS, check_field, check_params, unknown_names_error
from hpsearch.space.defaults import default_space
from hpsearch.space.distributions import ASHA, Choice, Distribution, Layers, describe, optuna_distributions
from hpsearch.space.params import DEFAULT_ENSEMBLE

_FIELDS: dict[str, Any] = {
    "data": None,
    "target": None,
    "params": None,
    "task": None,
    "metric": None,
    "mode": None,
    "num_samples": None,  # 20, unless a time budget alone bounds the search
    "max_epochs": 30,
    "scheduler": "asha",
    "searcher": "tpe",
    "resources": None,
    "seed": 0,
    "early_stopping_patience": None,
    "experiment": None,
    "split": (0.7, 0.15, 0.15),
    "executor": "ray",
    "drop": (),
    "model": None,
    "ensemble": DEFAULT_ENSEMBLE,
    "baseline": True,
    "cv": 0,
    "refit": False,
    "time_budget": None,
    "patience": None,
    "goal": None,
    "warm_start": None,
}
DEFAULT_NUM_SAMPLES = 20


class Search:
    """A hyperparameter search: the data, the space of hyperparameters and how to search it.

    Every field is checked here, so a space file with a mistake fails when it is loaded, naming the field.

    Example::

        search = Search(
            data="sklearn:digits",
            params={"layers": layers(1, 3, units=(16, 256)), "lr": loguniform(1e-4, 1e-1)},
            metric="val_loss", mode="min", num_samples=20, max_epochs=30,
        )
    """

    data: str | Callable[[], Any]
    target: str | None
    params: dict[str, Any]
    task: str | None
    metric: str | None
    mode: str | None
    num_samples: int | None  # None: trials are proposed until the time budget is spent
    max_epochs: int
    scheduler: ASHA | None
    searcher: str
    resources: dict[str, float]
    seed: int
    early_stopping_patience: int | None
    experiment: str | None
    split: tuple[float, float, float]
    executor: str
    drop: tuple[str, ...]
    model: Callable[..., Any] | None
    ensemble: int  # greedy selection steps; 0: the best trial alone
    baseline: bool
    cv: int  # folds of the training rows each trial is evaluated on; 0: none
    refit: bool  # the published model trained again on training + validation rows
    #: True when the space file gave no ``params`` for the built-in network: ``params`` is then
    #: :func:`hpsearch.space.defaults.default_space`.
    default_params: bool
    time_budget: float | None  # seconds
    patience: int | None  # finished trials without a new best that end the search
    goal: float | None  # a value of the metric that ends the search once a trial reaches it
    warm_start: str | None  # an experiment or a search's run id whose trials seed the searcher

    def __init__(self, **fields: Any) -> None:
        unknown = sorted(set(fields) - set(_FIELDS))
        if unknown:  # every unknown name at once, the hyperparameters' too
            params = fields.get("params")
            free = fields.get("model") is not None  # with model=, params may name anything
            checked = isinstance(params, Mapping) and not free
            unknown_params = sorted(set(params) - set(PARAM_CHECKS)) if checked else []
            raise unknown_names_error([(name, _FIELDS) for name in unknown] +
                                      [(f"params.{name}", PARAM_CHECKS) for name in unknown_params])
        if "data" not in fields:
            raise SpaceError("is required: for example data='sklearn:digits' or data='csv:table.csv'", field="data")
        object.__setattr__(self, "_fields", {**_FIELDS, **fields})
        for name, value in self._fields.items():
            checked = (check_params(value, free=fields.get("model") is not None) if name == "params"
                       else check_field(name, value))
            object.__setattr__(self, name, checked)
        if self.num_samples is None and self.time_budget is None:
            object.__setattr__(self, "num_samples", DEFAULT_NUM_SAMPLES)
        self._check_metric_mode()
        # No params for the built-in network: a space chosen by measurement, rather than one configuration N times
        # (a grid has nothing to enumerate in it: it trains the defaults once, as before)
        object.__setattr__(self, "default_params", not self.params and self.model is None and self.searcher != "grid")
        if self.default_params:
            object.__setattr__(self, "params", default_space())

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("Search is immutable: use Search.replace(...)")

    def __repr__(self) -> str:
        given = ", ".join(f"{k}={v!r}" for k, v in self._fields.items() if v != _FIELDS[k])
        return f"Search({given})"

    def replace(self, *, clear: tuple[str, ...] = (), **changes: Any) -> Search:
        """A copy with some fields changed and checked again (used for command-line overrides); a change to None
        keeps the field, ``clear`` names fields set back to their default (``num_samples`` with a time budget:
        trials until it is spent)."""
        kept = {k: v for k, v in self._fields.items() if k not in clear}
        return Search(**{**kept, **{k: v for k, v in changes.items() if v is not None}})

    def _check_metric_mode(self) -> None:
        if self.metric is not None and not isinstance(self.metric, str):
            raise SpaceError(f"must be a metric name, but got {self.metric!r}", field="metric")
        if self.mode is not None and self.mode not in ("min", "max"):
            raise SpaceError(f"must be 'min' or 'max', but got {self.mode!r}", field="mode")

    # -------------------------------------------------------------------------------------- sampling
    def searched_params(self) -> dict[str, Distribution]:
        """The params given as a distribution (what the searcher proposes)."""
        return {k: v for k, v in self.params.items() if isinstance(v, Distribution)}

    def grid(self) -> dict[str, list[Any]]:
        """The grid of a space made of choices and fixed values only (for Optuna's ``GridSampler``)."""
        grid: dict[str, list[Any]] = {}
        for name, value in self.searched_params().items():
            if isinstance(value, Choice):
                grid[name] = list(value.options)
            elif isinstance(value, Layers) and value.choices is not None:
                grid[name] = value.grid_options()
            elif not (isinstance(value, Layers) and value.is_grid):
                raise SpaceError(
                    f"searcher 'grid' needs choices and fixed values only, but this param is {describe(value)}; "
                    "use choice([...]) or searcher='tpe'",
                    field=f"params.{name}",
                )
        return grid

    def grid_size(self) -> int:
        return math.prod(len(v) for v in self.grid().values())

    def describe_params(self) -> dict[str, str]:
        """The space for the parent run's params: each searched one as Optuna's distribution JSON (the layers as
        ``n_layers`` and ``units_i``, as the searcher names them), each fixed one as the space file wrote it."""
        from optuna.distributions import distribution_to_json

        described = {f"space.{k}": describe(v) for k, v in self.params.items() if not isinstance(v, Distribution)}
        for name, value in self.searched_params().items():
            if isinstance(value, Layers) and value.sizes is not None:
                described[f"space.{name}"] = describe(value)
                continue
            for key, dist in optuna_distributions(name, value).items():
                described[f"space.{key}"] = distribution_to_json(dist)
        return described
