"""Every field of :class:`~hpsearch.space.search.Search` and every hyperparameter checked, with errors that name
the field, what was given and what is allowed (and the nearest name, for a typo).
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from hpsearch import errors
from hpsearch.errors import SpaceError
from hpsearch.space.distributions import (
    API_NAMES,
    ASHA,
    Choice,
    Distribution,
    Layers,
    LogUniform,
    RandInt,
    Uniform,
    check_sizes,
    describe,
    is_float,
    is_int,
)
from hpsearch.space.params import (
    ACTIVATIONS,
    DEFAULT_CV,
    DEFAULT_ENSEMBLE,
    EXECUTORS,
    LR_SCHEDULES,
    MAX_CV,
    NUMERIC_EMBEDDINGS,
    NUMERIC_ENCODINGS,
    OPTIMIZERS,
    SCHEDULERS,
    SEARCHERS,
    SKLEARN_DATASETS,
    TARGET_TRANSFORMS,
    TASKS,
    TRAINING_PARAMS,
)


def check_field(name: str, value: Any) -> Any:
    """Check one field of :class:`Search` and return its normalised value."""
    checker = FIELD_CHECKS.get(name)
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


def check_params(value: Any, *, free: bool = False) -> dict[str, Any]:
    """The hyperparameters; ``free`` (a search with ``model=``): names other than the training function's own
    and ``layers`` are the model function's, any distribution or plain value."""
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise SpaceError(f"must be a dict of hyperparameters, but got {type(value).__name__}", field="params")
    params = dict(value)
    unknown = [name for name in params if name not in PARAM_CHECKS]
    if unknown and not free:
        raise unknown_names_error([(f"params.{name}", PARAM_CHECKS) for name in unknown])
    for name, spec in params.items():
        field = f"params.{name}"
        own = name in TRAINING_PARAMS or name == "layers" or not free
        try:
            params[name] = PARAM_CHECKS[name](spec) if own else _check_model_param(spec)
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
    """The field or hyperparameter a typo most likely meant (:func:`hpsearch.errors.nearest_name`), or a usual
    synonym (``epochs`` -> ``max_epochs``); None when nothing is near."""
    return errors.nearest_name(name, list(known), aliases=_ALIASES)


def _check_int(name: str, minimum: int) -> Callable[[Any], int]:
    def check(value: Any) -> int:
        if not is_int(value) or value < minimum:
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
                     f"returning a torch.nn.Module, but got {describe(value)}", field="model")


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


def _check_ensemble(value: Any) -> int:
    """``ensemble=``: greedy selection steps (an integer), True for the default, False / 0 / None for none."""
    if value is True:
        return DEFAULT_ENSEMBLE
    if value is None or value is False:
        return 0
    if not is_int(value) or value < 0:
        raise SpaceError(f"must be the number of greedy selection steps (an integer >= 1, such as "
                         f"{DEFAULT_ENSEMBLE}), or False to publish the best trial alone, but got {value!r}",
                         field="ensemble")
    return value


def _check_cv(value: Any) -> int:
    """``cv=``: the number of folds (2 to MAX_CV), True for DEFAULT_CV, False / None / 0 for none."""
    if value is True:
        return DEFAULT_CV
    if value is None or value is False or value in (0, 1):
        return 0
    if not is_int(value) or not 2 <= value <= MAX_CV:
        raise SpaceError(f"must be a number of folds from 2 to {MAX_CV} (such as {DEFAULT_CV}), or False for one "
                         f"validation split, but got {value!r}", field="cv")
    return value


def _check_bool(name: str) -> Callable[[Any], bool]:
    def check(value: Any) -> bool:
        if not isinstance(value, bool):
            raise SpaceError(f"must be True or False, but got {value!r}", field=name)
        return value

    return check


def _check_str(name: str) -> Callable[[Any], str | None]:
    def check(value: Any) -> str | None:
        if value is not None and (not isinstance(value, str) or not value.strip()):
            raise SpaceError(f"must be a non-empty string, but got {value!r}", field=name)
        return value

    return check


def _check_duration(value: Any) -> float | None:
    """``time_budget``: seconds (a number > 0), or a duration such as ``"90s"``, ``"10m"``, ``"2h"``, ``"1h30m"``."""
    if value is None:
        return None
    seconds = parse_duration(value)
    if seconds is None or not math.isfinite(seconds) or seconds <= 0:
        raise SpaceError(f"must be seconds > 0 or a duration such as '90s', '10m', '2h' or '1h30m', but got {value!r}",
                         field="time_budget")
    return seconds


def parse_duration(value: Any) -> float | None:
    """Seconds in a number or a text such as ``"90"``, ``"90s"``, ``"1.5m"``, ``"2h"``, ``"1h30m"``; None when it is
    neither."""
    if is_float(value):
        return float(value)
    if not isinstance(value, str) or not value.strip():
        return None
    import re

    text = value.strip().lower()
    parts = re.fullmatch(r"(?:(\d+(?:\.\d+)?)h)?\s*(?:(\d+(?:\.\d+)?)m)?\s*(?:(\d+(?:\.\d+)?)s?)?", text)
    if parts is None or not any(parts.groups()):
        return None
    hours, minutes, seconds = (float(p) if p else 0.0 for p in parts.groups())
    return hours * 3600 + minutes * 60 + seconds


def _check_goal(value: Any) -> float | None:
    if value is not None and (not is_float(value) or not math.isfinite(value)):
        raise SpaceError(f"must be a number, the metric's value that ends the search, but got {value!r}", field="goal")
    return None if value is None else float(value)


FIELD_CHECKS: dict[str, Callable[[Any], Any]] = {
    "data": _check_data,
    "target": _check_str("target"),
    "params": check_params,
    "task": _check_one_of("task", TASKS),
    "num_samples": _check_optional_int("num_samples", 1),
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
    "ensemble": _check_ensemble,
    "baseline": _check_bool("baseline"),
    "cv": _check_cv,
    "refit": _check_bool("refit"),
    "time_budget": _check_duration,
    "patience": _check_optional_int("patience", 1),
    "goal": _check_goal,
    "warm_start": _check_str("warm_start"),
}


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
                names = ", ".join(API_NAMES[t] for t in allowed)
                raise SpaceError(f"is {describe(spec)}, which does not fit this hyperparameter; use {names}")
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
        check_sizes(spec)
        return list(spec)
    raise SpaceError(
        f"must be layers(min, max, units=(low, high)), layers(sizes=[...]), a list of sizes or "
        f"a choice of lists, but got {spec!r}"
    )



PARAM_CHECKS: dict[str, Callable[[Any], Any]] = {
    "layers": _check_layers_param,
    "lr": _scalar_param("float", lambda v: is_float(v) and v > 0, "a number > 0"),
    "dropout": _scalar_param("float", lambda v: is_float(v) and 0 <= v < 1, "a number in [0, 1)"),
    "weight_decay": _scalar_param("float", lambda v: is_float(v) and v >= 0, "a number >= 0"),
    "batch_size": _scalar_param("int", lambda v: is_int(v) and v >= 1, "an integer >= 1"),
    "optimizer": _scalar_param("str", lambda v: v in OPTIMIZERS, f"one of {', '.join(OPTIMIZERS)}"),
    "momentum": _scalar_param("float", lambda v: is_float(v) and 0 <= v <= 1, "a number in [0, 1]"),
    "activation": _scalar_param("str", lambda v: v in ACTIVATIONS, f"one of {', '.join(ACTIVATIONS)}"),
    "lr_schedule": _scalar_param("str", lambda v: v in LR_SCHEDULES, f"one of {', '.join(LR_SCHEDULES)}"),
    "label_smoothing": _scalar_param("float", lambda v: is_float(v) and 0 <= v < 1, "a number in [0, 1)"),
    "adam_beta2": _scalar_param("float", lambda v: is_float(v) and 0 <= v < 1, "a number in [0, 1)"),
    "numeric_encoding": _scalar_param("str", lambda v: v in NUMERIC_ENCODINGS,
                                      f"one of {', '.join(NUMERIC_ENCODINGS)}"),
    "numeric_embedding": _scalar_param("str", lambda v: v in NUMERIC_EMBEDDINGS,
                                       f"one of {', '.join(NUMERIC_EMBEDDINGS)}"),
    "target_transform": _scalar_param("str", lambda v: v in TARGET_TRANSFORMS,
                                      f"one of {', '.join(TARGET_TRANSFORMS)}"),
}
