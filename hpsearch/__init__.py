"""hpsearch: hyperparameter search for PyTorch models with Ray Tune, Optuna and MLflow.

A space file imports its API from here::

    from hpsearch import Search, layers, loguniform, uniform, choice, randint
"""

from hpsearch.errors import DataError, HpsearchError, SpaceError, TrackingError
from hpsearch.space import Search, asha, choice, layers, load_space, loguniform, randint, uniform

__all__ = [
    "DataError",
    "HpsearchError",
    "Search",
    "SpaceError",
    "TrackingError",
    "asha",
    "choice",
    "layers",
    "load_space",
    "loguniform",
    "randint",
    "uniform",
]
__version__ = "0.1.0"
