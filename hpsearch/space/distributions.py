"""What a space file builds its search from: the distributions, :func:`layers`, and the ASHA scheduler.

The distributions are plain frozen dataclasses: they describe a range and know how to ask an Optuna trial for a
value (:func:`suggest_params`), which is how Ray Tune's ``OptunaSearch`` samples our conditional layer space
(define-by-run); :func:`optuna_distributions` gives the same space as Optuna's distributions, which the parent
run records.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from hpsearch.errors import SpaceError
from hpsearch.space.params import decode_sizes, encode_sizes, layer_params


@dataclass(frozen=True)
class Uniform:
    """A float drawn uniformly from ``[low, high]``."""

    low: float
    high: float

    def check(self) -> None:
        check_bounds(self, "uniform", self.low, self.high)

    def suggest(self, trial: Any, name: str) -> float:
        return trial.suggest_float(name, self.low, self.high)


@dataclass(frozen=True)
class LogUniform:
    """A float drawn uniformly on a log scale from ``[low, high]``; needs ``0 < low < high``."""

    low: float
    high: float

    def check(self) -> None:
        check_bounds(self, "loguniform", self.low, self.high)
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
        if not (is_int(self.low) and is_int(self.high)):
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
            check_sizes(self.sizes)
        elif self.choices is not None:
            if not self.choices:
                raise SpaceError("layers(choices=...) needs at least one list of sizes, but got an empty list")
            for sizes in self.choices:
                check_sizes(sizes)
        else:
            self._check_range()

    def _check_range(self) -> None:
        lo_n, hi_n = self.min_layers, self.max_layers
        if not (is_int(lo_n) and is_int(hi_n)) or not 0 <= lo_n <= hi_n:
            raise SpaceError(f"layers needs integers 0 <= min_layers <= max_layers, but got ({lo_n!r}, {hi_n!r})")
        if self.units is None or len(self.units) != 2:
            raise SpaceError(f"layers needs units=(low, high), but got units={self.units!r}")
        lo, hi = self.units
        if not (is_int(lo) and is_int(hi)) or not 1 <= lo <= hi:
            raise SpaceError(f"layers needs integer units with 1 <= low <= high, but got units=({lo!r}, {hi!r})")

    @property
    def is_grid(self) -> bool:
        """Whether grid search can enumerate it (fixed sizes or a choice of lists)."""
        return self.sizes is not None or self.choices is not None

    def grid_options(self) -> list[str]:
        return [encode_sizes(s) for s in (self.choices or (self.sizes,))]

    def suggest(self, trial: Any, name: str) -> dict[str, Any]:
        """Ask ``trial`` for the layer sizes; return the params that are fixed rather than suggested."""
        if self.sizes is not None:
            return layer_params(self.sizes)
        if self.choices is not None:
            encoded = trial.suggest_categorical(name, [encode_sizes(s) for s in self.choices])
            return layer_params(decode_sizes(encoded))
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


#: Without a ``grace_period``, ASHA's first rung comes after this fraction of ``max_epochs`` (1/4, at least one
#: epoch), and by default half the trials go on at each rung (:data:`DEFAULT_REDUCTION_FACTOR`). In its first
#: epochs a network's validation metric mostly tells how fast it starts (its learning rate), not how good it ends:
#: replayed on the full curves of 8-trial, 20-epoch searches of the real-table corpus (``bench/corpus_searches.py
#: asha``), a first rung after a tenth of the budget with a reduction factor of 3 stopped the trial that would have
#: won in most searches and handed out a worse one in about half; after a quarter, halving, it stopped it in few,
#: for about half the epochs of no stopping at all (docs/benchmarks.md).
AUTO_GRACE_FRACTION = 4
DEFAULT_REDUCTION_FACTOR = 2


@dataclass(frozen=True)
class ASHA:
    """Ray Tune's asynchronous successive halving: stop the weakest trials at each rung.

    ``grace_period`` is the fewest epochs a trial runs before it can be stopped (None: a quarter of
    ``max_epochs``, see :meth:`grace`); ``reduction_factor`` is how many trials compete for each place in the
    next rung.
    """

    grace_period: int | None = None
    reduction_factor: int = DEFAULT_REDUCTION_FACTOR

    def check(self) -> None:
        if self.grace_period is not None and (not is_int(self.grace_period) or self.grace_period < 1):
            raise SpaceError(f"asha needs an integer grace_period >= 1, but got {self.grace_period!r}")
        if not isinstance(self.reduction_factor, (int, float)) or self.reduction_factor < 2:
            raise SpaceError(f"asha needs reduction_factor >= 2, but got {self.reduction_factor!r}")

    def grace(self, max_epochs: int) -> int:
        """The grace period in epochs for a budget of ``max_epochs``: the one given, else a quarter of the budget
        (at least 1); never more than ``max_epochs``. Both executors stop trials at the rungs it starts."""
        chosen = self.grace_period if self.grace_period is not None else max_epochs // AUTO_GRACE_FRACTION
        return max(1, min(chosen, max_epochs))

    def describe(self, max_epochs: int) -> str:
        """What the search prints: ``ASHA: grace period 7 epochs (max_epochs 30 / 4), reduction factor 2``."""
        grace = self.grace(max_epochs)
        why = ("set in the space file" if self.grace_period is not None
               else f"max_epochs {max_epochs} / {AUTO_GRACE_FRACTION}, at least 1")
        return (f"ASHA: grace period {grace} epoch{'s' if grace != 1 else ''} ({why}), "
                f"reduction factor {self.reduction_factor:g}")


def asha(grace_period: int | None = None, reduction_factor: int = DEFAULT_REDUCTION_FACTOR) -> ASHA:
    """The ASHA scheduler with its two knobs, for ``Search(scheduler=asha(...))``; without ``grace_period``,
    a quarter of ``max_epochs``."""
    return ASHA(grace_period, reduction_factor)


Distribution = Uniform | LogUniform | RandInt | Choice | Layers


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
            constants.update(layer_params(value))
        else:
            constants[name] = value
    return constants


API_NAMES = {Uniform: "uniform", LogUniform: "loguniform", RandInt: "randint", Choice: "choice", Layers: "layers"}


def describe(value: Any) -> str:
    if isinstance(value, (Uniform, LogUniform, RandInt)):
        return f"{API_NAMES[type(value)]}({value.low}, {value.high})"
    if isinstance(value, Choice):
        return f"choice({list(value.options)!r})"
    if isinstance(value, Layers):
        if value.sizes is not None:
            return f"layers(sizes={list(value.sizes)})"
        if value.choices is not None:
            return f"layers(choices={[list(c) for c in value.choices]})"
        return f"layers({value.min_layers}, {value.max_layers}, units={value.units})"
    return repr(value)


def is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def check_bounds(dist: Any, name: str, low: Any, high: Any) -> None:
    if not (is_float(low) and is_float(high)):
        raise SpaceError(f"{name} needs finite numbers, but got (low={low!r}, high={high!r})")
    if low >= high:
        raise SpaceError(f"{name} needs low < high, but got (low={low}, high={high})")


def check_sizes(sizes: Sequence[Any]) -> None:
    if not all(is_int(s) and s >= 1 for s in sizes):
        raise SpaceError(f"layer sizes must be integers >= 1, but got {list(sizes)!r}")

def is_float(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
