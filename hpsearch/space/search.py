"""The space-file API (:class:`Search`, :func:`layers` and the distributions) and :func:`load_space`.

A space file is plain Python that defines a module-level ``search = Search(...)``. Everything is validated
when ``Search(...)`` is built, so a mistake is reported with the field's name before Ray, the data or the
tracking store are touched. The distributions are plain frozen dataclasses: they describe a range and know
how to ask an Optuna trial for a value (:func:`suggest_params`), which is how Ray Tune's ``OptunaSearch``
samples our conditional layer space (define-by-run).
"""

from __future__ import annotations

import importlib.util
import inspect
import math
import sys
import traceback
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hpsearch.errors import SpaceError

__all__ = [
    "ASHA",
    "Choice",
    "Layers",
    "LogUniform",
    "RandInt",
    "Search",
    "Uniform",
    "asha",
    "choice",
    "layers",
    "load_space",
    "suggest_params",
    "loguniform",
    "randint",
    "uniform",
]

OPTIMIZERS = ("sgd", "adam", "adamw", "rmsprop")
ACTIVATIONS = ("relu", "tanh", "sigmoid", "leaky_relu", "gelu")
TASKS = ("binary", "multiclass", "regression")
SEARCHERS = ("tpe", "random", "grid")
SCHEDULERS = ("asha", "fifo")
EXECUTORS = ("ray", "local", "batched", "auto")
SKLEARN_DATASETS = ("digits", "iris", "wine", "breast_cancer", "diabetes")

#: Hyperparameters the training function knows, with the value used when a space file leaves one out.
DEFAULT_PARAMS: dict[str, Any] = {
    "layers": [64],
    "lr": 1e-3,
    "dropout": 0.0,
    "weight_decay": 0.0,
    "batch_size": 64,
    "optimizer": "adam",
    "momentum": 0.9,
    "activation": "relu",
}
#: What the training function itself reads (the optimizer and the batches); with ``model=`` every other name in
#: ``params`` is the user's model function's to read.
TRAINING_PARAMS = ("lr", "weight_decay", "batch_size", "optimizer", "momentum")


# --------------------------------------------------------------------------------------------- distributions
@dataclass(frozen=True)
class Uniform:
    """A float drawn uniformly from ``[low, high]``."""

    low: float
    high: float

    def check(self) -> None:
        _check_bounds(self, "uniform", self.low, self.high)

    def suggest(self, trial: Any, name: str) -> float:
        return trial.suggest_float(name, self.low, self.high)


@dataclass(frozen=True)
class LogUniform:
    """A float drawn uniformly on a log scale from ``[low, high]``; needs ``0 < low < high``."""

    low: float
    high: float

    def check(self) -> None:
        _check_bounds(self, "loguniform", self.low, self.high)
        if self.low <= 0:
            raise SpaceError(f"loguniform needs 0 < low < high, but got (low={self.low}, high={self.high})")

    def suggest(self, trial: Any, name: str) -> float:
        return trial.suggest_float(name, self.low, self.high, log=True)


@dataclass(frozen=True)
class RandInt:
    """An integer drawn uniformly from ``[low, high]``, both ends included (Optuna's convention)."""

    low: int
    high: int

    def check(self) -> None:
        if not (_is_int(self.low) and _is_int(self.high)):
            raise SpaceError(f"randint needs integer bounds, but got (low={self.low!r}, high={self.high!r})")
        if self.low > self.high:
            raise SpaceError(f"randint needs low <= high, but got (low={self.low}, high={self.high})")

    def suggest(self, trial: Any, name: str) -> int:
        return trial.suggest_int(name, self.low, self.high)


@dataclass(frozen=True)
class Choice:
    """One of a list of options."""

    options: tuple[Any, ...]

    def check(self) -> None:
        if len(self.options) == 0:
            raise SpaceError("choice needs at least one option, but got an empty list")

    def suggest(self, trial: Any, name: str) -> Any:
        return trial.suggest_categorical(name, list(self.options))


@dataclass(frozen=True)
class Layers:
    """The hidden layers: a conditional space (depth, then one width per layer), fixed sizes, or a choice of lists.

    Recorded as the params ``n_layers`` and ``units_0``, ``units_1``, ... (one per existing layer).
    """

    min_layers: int | None = None
    max_layers: int | None = None
    units: tuple[int, int] | None = None
    sizes: tuple[int, ...] | None = None
    choices: tuple[tuple[int, ...], ...] | None = None

    def check(self) -> None:
        if self.sizes is not None:
            _check_sizes(self.sizes)
        elif self.choices is not None:
            if not self.choices:
                raise SpaceError("layers(choices=...) needs at least one list of sizes, but got an empty list")
            for sizes in self.choices:
                _check_sizes(sizes)
        else:
            self._check_range()

    def _check_range(self) -> None:
        lo_n, hi_n = self.min_layers, self.max_layers
        if not (_is_int(lo_n) and _is_int(hi_n)) or not 0 <= lo_n <= hi_n:
            raise SpaceError(f"layers needs integers 0 <= min_layers <= max_layers, but got ({lo_n!r}, {hi_n!r})")
        if self.units is None or len(self.units) != 2:
            raise SpaceError(f"layers needs units=(low, high), but got units={self.units!r}")
        lo, hi = self.units
        if not (_is_int(lo) and _is_int(hi)) or not 1 <= lo <= hi:
            raise SpaceError(f"layers needs integer units with 1 <= low <= high, but got units=({lo!r}, {hi!r})")

    @property
    def is_grid(self) -> bool:
        """Whether grid search can enumerate it (fixed sizes or a choice of lists)."""
        return self.sizes is not None or self.choices is not None

    def grid_options(self) -> list[str]:
        return [_encode_sizes(s) for s in (self.choices or (self.sizes,))]

    def suggest(self, trial: Any, name: str) -> dict[str, Any]:
        """Ask ``trial`` for the layer sizes; return the params that are fixed rather than suggested."""
        if self.sizes is not None:
            return _layer_params(self.sizes)
        if self.choices is not None:
            encoded = trial.suggest_categorical(name, [_encode_sizes(s) for s in self.choices])
            return _layer_params(decode_sizes(encoded))
        n_layers = trial.suggest_int("n_layers", self.min_layers, self.max_layers)
        for i in range(n_layers):
            trial.suggest_int(f"units_{i}", self.units[0], self.units[1], log=True)
        return {}


def uniform(low: float, high: float) -> Uniform:
    """A float drawn uniformly from ``[low, high]``."""
    return Uniform(low, high)


def loguniform(low: float, high: float) -> LogUniform:
    """A float drawn on a log scale from ``[low, high]`` (learning rates, weight decay)."""
    return LogUniform(low, high)


def randint(low: int, high: int) -> RandInt:
    """An integer from ``[low, high]``, both ends included."""
    return RandInt(low, high)


def choice(options: Sequence[Any]) -> Choice:
    """One of ``options``, for example ``choice(["adam", "sgd"])``."""
    if isinstance(options, (str, bytes)) or not isinstance(options, Sequence):
        raise SpaceError(f"choice needs a list of options, but got {options!r}; write choice([...])")
    return Choice(tuple(tuple(o) if isinstance(o, list) else o for o in options))


def layers(
    min_layers: int | None = None,
    max_layers: int | None = None,
    *,
    units: tuple[int, int] | None = None,
    sizes: Sequence[int] | None = None,
    choices: Sequence[Sequence[int]] | None = None,
) -> Layers:
    """The hidden layers of the network.

    ``layers(1, 3, units=(16, 256))`` searches the depth (1 to 3) and then one width per layer on a log scale;
    ``layers(sizes=[128, 64])`` fixes them; ``layers(choices=[[128, 64], [256]])`` picks one of several lists.
    """
    return Layers(
        min_layers=min_layers,
        max_layers=max_layers,
        units=tuple(units) if units is not None else None,
        sizes=tuple(sizes) if sizes is not None else None,
        choices=tuple(tuple(c) for c in choices) if choices is not None else None,
    )


#: Without a ``grace_period``, ASHA's first rung comes after this fraction of ``max_epochs`` (1/10, at least one
#: epoch). In its first epochs a network's validation metric mostly tells how fast it starts (its learning rate),
#: not how good it ends: on Auto MPG (60 trials, 100 epochs) a first rung after one epoch stopped 22 trials there
#: and ended at a test MAE of 2.08, one after ten epochs at 1.95. A tenth of the budget still stops weak trials
#: long before the end (rungs at 10, 30 and 90 of 100 epochs with a reduction factor of 3).
AUTO_GRACE_FRACTION = 10


@dataclass(frozen=True)
class ASHA:
    """Ray Tune's asynchronous successive halving: stop the weakest trials at each rung.

    ``grace_period`` is the fewest epochs a trial runs before it can be stopped (None: a tenth of
    ``max_epochs``, see :meth:`grace`); ``reduction_factor`` is how many trials compete for each place in the
    next rung.
    """

    grace_period: int | None = None
    reduction_factor: int = 3

    def check(self) -> None:
        if self.grace_period is not None and (not _is_int(self.grace_period) or self.grace_period < 1):
            raise SpaceError(f"asha needs an integer grace_period >= 1, but got {self.grace_period!r}")
        if not isinstance(self.reduction_factor, (int, float)) or self.reduction_factor < 2:
            raise SpaceError(f"asha needs reduction_factor >= 2, but got {self.reduction_factor!r}")

    def grace(self, max_epochs: int) -> int:
        """The grace period in epochs for a budget of ``max_epochs``: the one given, else a tenth of the budget
        (at least 1); never more than ``max_epochs``. Both executors stop trials at the rungs it starts."""
        chosen = self.grace_period if self.grace_period is not None else max_epochs // AUTO_GRACE_FRACTION
        return max(1, min(chosen, max_epochs))

    def describe(self, max_epochs: int) -> str:
        """What the search prints: ``ASHA: grace period 3 epochs (max_epochs 30 / 10), reduction factor 3``."""
        grace = self.grace(max_epochs)
        why = ("set in the space file" if self.grace_period is not None
               else f"max_epochs {max_epochs} / {AUTO_GRACE_FRACTION}, at least 1")
        return (f"ASHA: grace period {grace} epoch{'s' if grace != 1 else ''} ({why}), "
                f"reduction factor {self.reduction_factor:g}")


def asha(grace_period: int | None = None, reduction_factor: int = 3) -> ASHA:
    """The ASHA scheduler with its two knobs, for ``Search(scheduler=asha(...))``; without ``grace_period``,
    a tenth of ``max_epochs``."""
    return ASHA(grace_period, reduction_factor)


Distribution = Uniform | LogUniform | RandInt | Choice | Layers


# ---------------------------------------------------------------------------------------------------- Search
_FIELDS: dict[str, Any] = {
    "data": None,
    "target": None,
    "params": None,
    "task": None,
    "metric": None,
    "mode": None,
    "num_samples": 20,
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
}


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
    num_samples: int
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

    def __init__(self, **fields: Any) -> None:
        unknown = sorted(set(fields) - set(_FIELDS))
        if unknown:  # every unknown name at once, the hyperparameters' too
            params = fields.get("params")
            free = fields.get("model") is not None  # with model=, params may name anything
            checked = isinstance(params, Mapping) and not free
            unknown_params = sorted(set(params) - set(_PARAM_CHECKS)) if checked else []
            raise unknown_names_error([(name, _FIELDS) for name in unknown] +
                                      [(f"params.{name}", _PARAM_CHECKS) for name in unknown_params])
        if "data" not in fields:
            raise SpaceError("is required: for example data='sklearn:digits' or data='csv:table.csv'", field="data")
        object.__setattr__(self, "_fields", {**_FIELDS, **fields})
        for name, value in self._fields.items():
            checked = (_check_params(value, free=fields.get("model") is not None) if name == "params"
                       else _normalise(name, value))
            object.__setattr__(self, name, checked)
        self._check_metric_mode()

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("Search is immutable: use Search.replace(...)")

    def __repr__(self) -> str:
        given = ", ".join(f"{k}={v!r}" for k, v in self._fields.items() if v != _FIELDS[k])
        return f"Search({given})"

    def replace(self, **changes: Any) -> Search:
        """A copy with some fields changed and checked again (used for command-line overrides)."""
        return Search(**{**self._fields, **{k: v for k, v in changes.items() if v is not None}})

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
                    f"searcher 'grid' needs choices and fixed values only, but this param is {_describe(value)}; "
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

        described = {f"space.{k}": _describe(v) for k, v in self.params.items() if not isinstance(v, Distribution)}
        for name, value in self.searched_params().items():
            if isinstance(value, Layers) and value.sizes is not None:
                described[f"space.{name}"] = _describe(value)
                continue
            for key, dist in optuna_distributions(name, value).items():
                described[f"space.{key}"] = distribution_to_json(dist)
        return described


def optuna_distributions(name: str, value: Distribution) -> dict[str, Any]:
    """The Optuna distributions a searched param asks its trial for (see ``suggest``), by the names it uses."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    if isinstance(value, (Uniform, LogUniform)):
        return {name: FloatDistribution(value.low, value.high, log=isinstance(value, LogUniform))}
    if isinstance(value, RandInt):
        return {name: IntDistribution(value.low, value.high)}
    if isinstance(value, Choice):
        # Optuna's choices are scalars: a list of layer sizes is recorded as its text
        return {name: CategoricalDistribution([o if o is None or isinstance(o, (bool, int, float, str)) else str(o)
                                               for o in value.options])}
    if value.choices is not None:
        return {name: CategoricalDistribution(value.grid_options())}
    if value.sizes is not None:
        return {}
    units = IntDistribution(value.units[0], value.units[1], log=True)
    return {"n_layers": IntDistribution(value.min_layers, value.max_layers),
            **{f"units_{i}": units for i in range(value.max_layers)}}


def suggest_params(params: Mapping[str, Any], trial: Any) -> dict[str, Any]:
    """Ask an Optuna trial for every searched param: the define-by-run space for Ray's ``OptunaSearch``.

    Returns the values that are not suggested (fixed params, fixed layer sizes); Ray Tune merges them with the
    suggested ones into the trial's config. A module-level function of plain data, so that Ray can pickle it
    with the searcher's state.
    """
    constants: dict[str, Any] = {}
    for name, value in params.items():
        if isinstance(value, Layers):
            constants.update(value.suggest(trial, name))
        elif isinstance(value, Distribution):
            value.suggest(trial, name)
        elif name == "layers":
            constants.update(_layer_params(value))
        else:
            constants[name] = value
    return constants


# ------------------------------------------------------------------------------------------------ validation
def _normalise(name: str, value: Any) -> Any:
    """Check one field of :class:`Search` and return its normalised value."""
    checker = _FIELD_CHECKS.get(name)
    return checker(value) if checker else value


def _check_data(value: Any) -> Any:
    if callable(value):
        return value
    if not isinstance(value, str) or ":" not in value:
        raise SpaceError(
            f"must be 'sklearn:NAME', 'csv:PATH', 'parquet:PATH' or a function returning (X, y), but got {value!r}",
            field="data",
        )
    kind, _, rest = value.partition(":")
    if kind == "sklearn" and rest not in SKLEARN_DATASETS:
        raise SpaceError(f"unknown dataset {rest!r}; scikit-learn ships: {', '.join(SKLEARN_DATASETS)}", field="data")
    if kind not in ("sklearn", "csv", "parquet"):
        raise SpaceError(f"unknown data source {kind!r}; use sklearn:, csv: or parquet:", field="data")
    if not rest:
        raise SpaceError(f"{kind}: needs a name or a path after the colon", field="data")
    return value


def _check_params(value: Any, *, free: bool = False) -> dict[str, Any]:
    """The hyperparameters; ``free`` (a search with ``model=``): names other than the training function's own
    and ``layers`` are the model function's, any distribution or plain value."""
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise SpaceError(f"must be a dict of hyperparameters, but got {type(value).__name__}", field="params")
    params = dict(value)
    unknown = [name for name in params if name not in _PARAM_CHECKS]
    if unknown and not free:
        raise unknown_names_error([(f"params.{name}", _PARAM_CHECKS) for name in unknown])
    for name, spec in params.items():
        field = f"params.{name}"
        own = name in TRAINING_PARAMS or name == "layers" or not free
        try:
            params[name] = _PARAM_CHECKS[name](spec) if own else _check_model_param(spec)
        except SpaceError as err:
            raise SpaceError(err.message, field=field) from None
    return params


# Names users write for a field or hyperparameter that neither difflib nor the initials find
_ALIASES = {"hidden_layers": "layers", "hidden_sizes": "layers", "units": "layers", "l2": "weight_decay",
            "optim": "optimizer", "epochs": "max_epochs", "trials": "num_samples"}


def unknown_names_error(names: list[tuple[str, Mapping[str, Any]]]) -> SpaceError:
    """One error naming every unknown field or hyperparameter, each with the nearest known name.

    ``names`` pairs a dotted name (``params.learning_rate``) with the names allowed there. One name: the error's
    field is that name (``params.learning_rate: unknown hyperparameter; did you mean lr? ...``); several: each
    is named in the one line.
    """
    parts, kinds = [], {}
    for dotted, known in names:
        kind = "hyperparameter" if dotted.startswith("params.") else "field"
        kinds[kind] = known
        parts.append((dotted, kind, nearest_name(dotted.rsplit(".", 1)[-1], known)))
    allowed = "; ".join(f"the {kind}s are: {', '.join(known)}" for kind, known in kinds.items())
    if len(parts) == 1:
        dotted, kind, guess = parts[0]
        return SpaceError(f"unknown {kind}" + (f"; did you mean {guess}?" if guess else "") + f" ({allowed})",
                          field=dotted)
    listed = ", ".join(dotted + (f" (did you mean {guess}?)" if guess else "") for dotted, _, guess in parts)
    return SpaceError(f"{len(parts)} unknown names: {listed} ({allowed})")


def nearest_name(name: str, known: Sequence[str] | Mapping[str, Any]) -> str | None:
    """The known name a typo most likely meant: a close spelling (difflib), the initials of its words
    (``learning_rate`` -> ``lr``), or a usual synonym; None when nothing is near."""
    import difflib

    known = list(known)
    lowered = name.lower()
    close = difflib.get_close_matches(lowered, known, n=1, cutoff=0.6)
    if close:
        return close[0]
    initials = "".join(word[0] for word in lowered.replace("-", "_").split("_") if word)
    if len(initials) > 1 and initials in known:
        return initials
    alias = _ALIASES.get(lowered)
    return alias if alias in known else None


def _check_int(name: str, minimum: int) -> Callable[[Any], int]:
    def check(value: Any) -> int:
        if not _is_int(value) or value < minimum:
            raise SpaceError(f"must be an integer >= {minimum}, but got {value!r}", field=name)
        return value

    return check


def _check_optional_int(name: str, minimum: int) -> Callable[[Any], int | None]:
    check_int = _check_int(name, minimum)
    return lambda value: None if value is None else check_int(value)


def _check_one_of(name: str, allowed: Sequence[str], *, optional: bool = True) -> Callable[[Any], Any]:
    def check(value: Any) -> Any:
        if (value is None and optional) or value in allowed:
            return value
        raise SpaceError(f"must be one of {', '.join(map(repr, allowed))}, but got {value!r}", field=name)

    return check


def _check_scheduler(value: Any) -> ASHA | None:
    if isinstance(value, ASHA):
        try:
            value.check()
        except SpaceError as err:
            raise SpaceError(err.message, field="scheduler") from None
        return value
    _check_one_of("scheduler", SCHEDULERS, optional=False)(value)
    return ASHA() if value == "asha" else None


def _check_resources(value: Any) -> dict[str, float]:
    if value is None:
        return {"cpu": 1, "gpu": 0}
    if not isinstance(value, Mapping) or set(value) - {"cpu", "gpu"}:
        raise SpaceError(f"must be a dict with keys 'cpu' and 'gpu', but got {value!r}", field="resources")
    resources = {"cpu": 1, "gpu": 0, **value}
    for key, amount in resources.items():
        if isinstance(amount, bool) or not isinstance(amount, (int, float)) or amount < 0:
            raise SpaceError(f"must be a number >= 0, but got {amount!r}", field=f"resources.{key}")
    if resources["cpu"] <= 0:
        raise SpaceError(f"must be > 0, but got {resources['cpu']!r}", field="resources.cpu")
    return resources


def _check_split(value: Any) -> tuple[float, float, float]:
    ok = isinstance(value, Sequence) and len(value) == 3 and all(isinstance(v, (int, float)) for v in value)
    if not ok or any(v <= 0 for v in value) or not math.isclose(sum(value), 1.0, abs_tol=1e-6):
        raise SpaceError(
            f"must be three fractions (train, validation, test), each > 0, summing to 1, but got {value!r}",
            field="split",
        )
    return tuple(float(v) for v in value)


def _check_drop(value: Any) -> tuple[str, ...]:
    """Column names to leave out (checked against the data's columns when the data is loaded)."""
    if isinstance(value, str) or not isinstance(value, Sequence) or not all(
            isinstance(v, str) and v.strip() for v in value):
        raise SpaceError(f"must be a list of column names, such as ['id', 'logwage'], but got {value!r}", field="drop")
    return tuple(value)


def _check_model(value: Any) -> Callable[..., Any] | None:
    """``model=``: a function of the space file (where it is defined is checked by :func:`load_space`)."""
    if value is None or inspect.isfunction(value):
        return value
    raise SpaceError(f"must be a function defined in the space file, def build(config, input_shape, n_outputs) "
                     f"returning a torch.nn.Module, but got {_describe(value)}", field="model")


def _check_model_param(spec: Any) -> Any:
    """A hyperparameter of the user's model: any distribution but ``layers(...)``, or one plain value."""
    if isinstance(spec, Layers):
        raise SpaceError("layers(...) is only for the hyperparameter 'layers'")
    if isinstance(spec, list):
        raise SpaceError(f"got a plain list {spec!r}; to search over it write choice({spec!r})")
    if isinstance(spec, Distribution):
        spec.check()
        values = spec.options if isinstance(spec, Choice) else ()
    else:
        values = (spec,)
    for v in values:  # what Optuna stores and MLflow shows as a param
        if not (v is None or isinstance(v, (bool, int, float, str))):
            raise SpaceError(f"must be a number, a string, a boolean or None (or a choice of them), but got {v!r}")
    return spec


def _check_str(name: str) -> Callable[[Any], str | None]:
    def check(value: Any) -> str | None:
        if value is not None and (not isinstance(value, str) or not value.strip()):
            raise SpaceError(f"must be a non-empty string, but got {value!r}", field=name)
        return value

    return check


_FIELD_CHECKS: dict[str, Callable[[Any], Any]] = {
    "data": _check_data,
    "target": _check_str("target"),
    "params": _check_params,
    "task": _check_one_of("task", TASKS),
    "num_samples": _check_int("num_samples", 1),
    "max_epochs": _check_int("max_epochs", 1),
    "scheduler": _check_scheduler,
    "searcher": _check_one_of("searcher", SEARCHERS, optional=False),
    "resources": _check_resources,
    "seed": _check_int("seed", 0),
    "early_stopping_patience": _check_optional_int("early_stopping_patience", 1),
    "experiment": _check_str("experiment"),
    "split": _check_split,
    "executor": _check_one_of("executor", EXECUTORS, optional=False),
    "drop": _check_drop,
    "model": _check_model,
}


# ---------------------------------------------------------------------------------- per-hyperparameter rules
def _scalar_param(kind: str, valid: Callable[[Any], bool], rule: str) -> Callable[[Any], Any]:
    """A checker for a numeric or categorical hyperparameter given as a value, a choice or a distribution.

    ``kind`` is "float", "int" or "str": which distributions make sense for it.
    """
    allowed = {"float": (Uniform, LogUniform, RandInt, Choice), "int": (RandInt, Choice), "str": (Choice,)}[kind]

    def check(spec: Any) -> Any:
        if isinstance(spec, list):
            raise SpaceError(f"got a plain list {spec!r}; to search over it write choice({spec!r})")
        if isinstance(spec, Distribution):
            if not isinstance(spec, allowed):
                names = ", ".join(_API_NAMES[t] for t in allowed)
                raise SpaceError(f"is {_describe(spec)}, which does not fit this hyperparameter; use {names}")
            spec.check()
            values = spec.options if isinstance(spec, Choice) else (spec.low, spec.high)
        else:
            values = (spec,)
        for v in values:
            if not valid(v):
                raise SpaceError(f"must be {rule}, but got {v!r}")
        return spec

    return check


def _check_layers_param(spec: Any) -> Any:
    if isinstance(spec, Layers):
        spec.check()
        return spec
    if isinstance(spec, Choice):  # choice([[128, 64], [256]]) means the same as layers(choices=...)
        spec.check()
        spec = Layers(choices=tuple(tuple(s) if isinstance(s, (list, tuple)) else (s,) for s in spec.options))
        spec.check()
        return spec
    if isinstance(spec, (list, tuple)):
        _check_sizes(spec)
        return list(spec)
    raise SpaceError(
        f"must be layers(min, max, units=(low, high)), layers(sizes=[...]), a list of sizes or "
        f"a choice of lists, but got {spec!r}"
    )


def _is_float(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


_PARAM_CHECKS: dict[str, Callable[[Any], Any]] = {
    "layers": _check_layers_param,
    "lr": _scalar_param("float", lambda v: _is_float(v) and v > 0, "a number > 0"),
    "dropout": _scalar_param("float", lambda v: _is_float(v) and 0 <= v < 1, "a number in [0, 1)"),
    "weight_decay": _scalar_param("float", lambda v: _is_float(v) and v >= 0, "a number >= 0"),
    "batch_size": _scalar_param("int", lambda v: _is_int(v) and v >= 1, "an integer >= 1"),
    "optimizer": _scalar_param("str", lambda v: v in OPTIMIZERS, f"one of {', '.join(OPTIMIZERS)}"),
    "momentum": _scalar_param("float", lambda v: _is_float(v) and 0 <= v <= 1, "a number in [0, 1]"),
    "activation": _scalar_param("str", lambda v: v in ACTIVATIONS, f"one of {', '.join(ACTIVATIONS)}"),
}

_API_NAMES = {Uniform: "uniform", LogUniform: "loguniform", RandInt: "randint", Choice: "choice", Layers: "layers"}


# ------------------------------------------------------------------------------------------------- helpers
def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _check_bounds(dist: Any, name: str, low: Any, high: Any) -> None:
    if not (_is_float(low) and _is_float(high)):
        raise SpaceError(f"{name} needs finite numbers, but got (low={low!r}, high={high!r})")
    if low >= high:
        raise SpaceError(f"{name} needs low < high, but got (low={low}, high={high})")


def _check_sizes(sizes: Sequence[Any]) -> None:
    if not all(_is_int(s) and s >= 1 for s in sizes):
        raise SpaceError(f"layer sizes must be integers >= 1, but got {list(sizes)!r}")


def _encode_sizes(sizes: Sequence[int]) -> str:
    """Optuna's categorical params hold scalars only, so a list of sizes travels as "128-64"."""
    return "-".join(str(s) for s in sizes) if sizes else "none"


def decode_sizes(encoded: str) -> list[int]:
    """The inverse of :func:`_encode_sizes`."""
    return [] if encoded == "none" else [int(s) for s in str(encoded).split("-")]


def _layer_params(sizes: Sequence[int]) -> dict[str, int]:
    return {"n_layers": len(sizes), **{f"units_{i}": int(s) for i, s in enumerate(sizes)}}


def _describe(value: Any) -> str:
    if isinstance(value, (Uniform, LogUniform, RandInt)):
        return f"{_API_NAMES[type(value)]}({value.low}, {value.high})"
    if isinstance(value, Choice):
        return f"choice({list(value.options)!r})"
    if isinstance(value, Layers):
        if value.sizes is not None:
            return f"layers(sizes={list(value.sizes)})"
        if value.choices is not None:
            return f"layers(choices={[list(c) for c in value.choices]})"
        return f"layers({value.min_layers}, {value.max_layers}, units={value.units})"
    return repr(value)


# --------------------------------------------------------------------------------------------------- loading
def load_space(path: str | Path) -> Search:
    """Load a space file and return its validated ``search``.

    The file is imported with :mod:`importlib` as a module of its own (never ``exec`` into our globals).
    Any mistake becomes a :class:`SpaceError` that names the file, and the line or the field.
    """
    path = Path(path)
    shown = str(path)
    if not path.is_file():
        raise SpaceError("no such file" if not path.exists() else "is not a file", path=shown)
    if path.suffix != ".py":
        raise SpaceError("a space file must be a Python file ending in .py", path=shown)
    module_name = f"_hpsearch_space_{abs(hash(path.resolve()))}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except SpaceError as err:
        err.path = f"{shown}:{_user_line(err, path)}" if _user_line(err, path) else shown
        raise SpaceError(err.message, field=err.field, path=err.path) from None
    except SyntaxError as err:
        raise SpaceError(f"syntax error: {err.msg}", path=f"{shown}:{err.lineno}") from None
    except Exception as err:  # the user's code failed: say where, without our frames
        line = _user_line(err, path)
        where = f"{shown}:{line}" if line else shown
        raise SpaceError(f"{type(err).__name__}: {err}", path=where) from None
    search = getattr(module, "search", None)
    if search is None:
        raise SpaceError("defines no module-level `search`; add search = Search(data=..., params={...})", path=shown)
    if not isinstance(search, Search):
        kind = type(search).__name__
        raise SpaceError(f"`search` must be built with hpsearch.Search(...), but is {kind}", path=shown)
    sys.modules.pop(module_name, None)
    if search.model is not None:
        _check_model_is_here(search.model, module, path)
    return search


def _check_model_is_here(function: Callable[..., Any], module: Any, path: Path) -> None:
    """``model=`` must be a top-level function of this file: its code travels with the trials and the model."""
    here = Path(function.__code__.co_filename).resolve() == path.resolve()
    if not here or getattr(module, function.__name__, None) is not function:
        where = "defined elsewhere" if not here else "not at the top level of the file"
        raise SpaceError(f"must be a function defined at the top level of the space file, "
                         f"def build(config, input_shape, n_outputs), but {function.__qualname__} is {where}",
                         field="model", path=str(path))


def _user_line(err: BaseException, path: Path) -> int | None:
    """The last line of the space file in the error's traceback."""
    frames = [f for f in traceback.extract_tb(err.__traceback__) if Path(f.filename).resolve() == path.resolve()]
    return frames[-1].lineno if frames else None

