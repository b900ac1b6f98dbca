"""What a search starts from: the built-in network's default configuration, which every search with a space for
the built-in network trains first (projected into the space, as Optuna's ``enqueue_trial`` does), and the space
searched when a space file gives no ``params``. Both were chosen by measurement (``bench/model_levers.py`` on the
tuning part of ``bench/corpus.py``; ``docs/benchmarks.md`` has the figures).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from hpsearch.space.distributions import (
    Choice,
    Distribution,
    Layers,
    LogUniform,
    RandInt,
    Uniform,
    describe,
    layers,
    loguniform,
    uniform,
)
from hpsearch.space.distributions import choice as choice_of
from hpsearch.space.params import DEFAULT_PARAMS, encode_sizes, layer_params

__all__ = ["DEFAULT_CONFIGURATION", "default_point", "default_space", "describe_space"]

#: The built-in network's default configuration: a search's first trial, within its space. The network of
#: ``../shared/reference/mlp_by_hand.py`` (3 x 256, dropout 0.1, AdamW with weight decay 1e-4, batch 64) with the
#: learning rate that did best with it on the tuning tables (3e-3 against 1e-3 and 1e-2: docs/benchmarks.md); the
#: training choices at their defaults, which no alternative beat there.
DEFAULT_CONFIGURATION: dict[str, Any] = {
    **DEFAULT_PARAMS,
    "layers": [256, 256, 256],
    "lr": 3e-3,
    "dropout": 0.1,
    "weight_decay": 1e-4,
    "batch_size": 64,
    "optimizer": "adamw",
}


def default_space() -> dict[str, Any]:
    """The space searched when a space file gives no ``params``: around the default configuration, and the
    numeric columns standardised or piecewise-linear: searched beside the user's space on the tuning tables (8 x 20,
    two seeds), that choice lowered the test RMSE of the regressions by 6.7 % (geometric mean; 11 searches better,
    4 worse) and moved the classifications' accuracy by -0.6 pt (1 better, 4 worse, by one or two test rows)."""
    return {
        "layers": layers(1, 3, units=(64, 256)),
        "lr": loguniform(3e-4, 1e-2),
        "dropout": uniform(0.0, 0.3),
        "weight_decay": loguniform(1e-6, 1e-3),
        "batch_size": choice_of([32, 64, 128]),
        "numeric_encoding": choice_of(["standard", "piecewise_linear"]),
    }


def describe_space(params: Mapping[str, Any]) -> str:
    """A space as one line: ``layers(1, 3, units=(64, 256)), lr loguniform(0.0003, 0.01), ...``."""
    return ", ".join(f"{name} {describe(value)}" if name != "layers" else describe(value)
                     for name, value in params.items())


def default_point(params: Mapping[str, Any]) -> dict[str, Any]:
    """The default configuration projected into a space: for each searched hyperparameter, the value (as the
    searcher names it: ``n_layers``, ``units_0``, ...) nearest to the default that the space allows.

    A range clips the default to its bounds (a log range on the log scale), a choice takes the default if it is
    one of its options, else the nearest number (on a log scale for positive numbers) or the first option; the
    layers take the default's depth and widths clipped to the space's. Hyperparameters the default configuration
    does not have (a space file's own model's) are left to the searcher.
    """
    point: dict[str, Any] = {}
    for name, spec in params.items():
        if name not in DEFAULT_CONFIGURATION or not isinstance(spec, Distribution):
            continue
        default = DEFAULT_CONFIGURATION[name]
        if isinstance(spec, Layers):
            point.update(_layers(spec, list(default)))
        elif isinstance(spec, Choice):
            point[name] = _nearest_option(spec.options, default)
        elif isinstance(spec, RandInt):
            point[name] = int(min(max(round(default), spec.low), spec.high))
        elif isinstance(spec, (Uniform, LogUniform)):
            point[name] = float(min(max(default, spec.low), spec.high))
    return point


def _layers(spec: Layers, default: list[int]) -> dict[str, Any]:
    if spec.sizes is not None:
        return {}
    if spec.choices is not None:
        def distance(sizes: tuple[int, ...]) -> tuple[int, float]:  # the depth first, then the widths (log scale)
            widths = sum(abs(math.log(s / d)) for s, d in zip(sizes, default, strict=False))
            return abs(len(sizes) - len(default)), widths

        nearest = min(spec.choices, key=distance)
        return {"layers": encode_sizes(nearest)}
    depth = min(max(len(default), spec.min_layers), spec.max_layers)
    widths = [default[min(i, len(default) - 1)] if default else spec.units[1] for i in range(depth)]
    return {"n_layers": depth, **{k: v for k, v in layer_params([min(max(w, spec.units[0]), spec.units[1])
                                                                 for w in widths]).items() if k != "n_layers"}}


def _nearest_option(options: tuple[Any, ...], default: Any) -> Any:
    if default in options:
        return default
    numbers = [o for o in options if isinstance(o, (int, float)) and not isinstance(o, bool)]
    if numbers and isinstance(default, (int, float)):
        logs = default > 0 and all(o > 0 for o in numbers)
        return min(numbers, key=lambda o: abs(math.log(o / default)) if logs else abs(o - default))
    return options[0]
