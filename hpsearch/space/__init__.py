"""The space-file API: the distributions, :class:`Search` and its checks, and the loader of space files.

Owns what a user writes. Imports nothing of hpsearch but :mod:`hpsearch.errors` (Optuna, lazily, for the
distributions the parent run records). Its modules: :mod:`~hpsearch.space.params` (the hyperparameters the
training function knows), :mod:`~hpsearch.space.distributions` (what a space file builds its search from),
:mod:`~hpsearch.space.checks`, :mod:`~hpsearch.space.search` (:class:`Search`), :mod:`~hpsearch.space.loader`.
"""

from hpsearch.space.distributions import (
    ASHA,
    Choice,
    Distribution,
    Layers,
    LogUniform,
    RandInt,
    Uniform,
    asha,
    choice,
    layers,
    loguniform,
    optuna_distributions,
    randint,
    suggest_params,
    uniform,
)
from hpsearch.space.loader import load_space
from hpsearch.space.params import (
    DEFAULT_PARAMS,
    HYPERPARAMETERS,
    TRAINING_CHOICES,
    TRAINING_PARAMS,
    decode_sizes,
    hyperparameters,
)
from hpsearch.space.search import Search

__all__ = ["ASHA", "DEFAULT_PARAMS", "HYPERPARAMETERS", "TRAINING_CHOICES", "TRAINING_PARAMS", "Choice",
           "Distribution", "Layers", "LogUniform", "RandInt", "Search", "Uniform", "asha", "choice", "decode_sizes",
           "hyperparameters", "layers", "load_space", "loguniform", "optuna_distributions", "randint", "suggest_params",
           "uniform"]
