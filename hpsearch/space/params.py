"""The hyperparameters the training function knows (names, allowed values, defaults) and a trial's params read
back from MLflow's strings as typed values.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

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


def encode_sizes(sizes: Sequence[int]) -> str:
    """Optuna's categorical params hold scalars only, so a list of sizes travels as "128-64"."""
    return "-".join(str(s) for s in sizes) if sizes else "none"


def decode_sizes(encoded: str) -> list[int]:
    """The inverse of :func:`encode_sizes`."""
    return [] if encoded == "none" else [int(s) for s in str(encoded).split("-")]


def layer_params(sizes: Sequence[int]) -> dict[str, int]:
    return {"n_layers": len(sizes), **{f"units_{i}": int(s) for i, s in enumerate(sizes)}}


#: Every hyperparameter of the built-in network, in the order an export lists them.
HYPERPARAMETERS = tuple(DEFAULT_PARAMS)  # layers, lr, dropout, weight_decay, batch_size, optimizer, ...
_INT_PARAMS = ("batch_size", "n_layers")
_STR_PARAMS = ("optimizer", "activation")
#: What a trial's params hold besides its hyperparameters (:meth:`hpsearch.training.fit.TrialConfig.to_params`).
_TRIAL_SETTINGS = ("max_epochs", "seed", "early_stopping_patience", "metric", "mode")


def hyperparameters(params: dict[str, str]) -> dict[str, Any]:
    """A trial's MLflow params (strings, ``n_layers`` + ``units_i``) as typed values with ``layers`` as a list.

    A name of the space file's own model (``model=``: ``channels``, ``kernel``) is read as a number, a boolean or
    None where it reads as one, else kept as text."""
    values: dict[str, Any] = {}
    if "n_layers" in params or not any(name in params for name in _TRIAL_SETTINGS):  # an MLP's trial has them
        values["layers"] = [int(params[f"units_{i}"]) for i in range(int(params.get("n_layers", 0)))]
    for name, raw in params.items():
        if name in HYPERPARAMETERS[1:]:
            values[name] = raw if name in _STR_PARAMS else int(raw) if name in _INT_PARAMS else float(raw)
        elif name not in _TRIAL_SETTINGS and name != "n_layers" and not name.startswith("units_"):
            values[name] = _typed(raw)
    return values


def _typed(raw: Any) -> Any:
    """An MLflow param (a string) as the value it was: 8, 0.25, True, None, or the text itself."""
    if not isinstance(raw, str):
        return raw
    for kind in (int, float):
        try:
            return kind(raw)
        except ValueError:
            pass
    return {"True": True, "False": False, "None": None}.get(raw, raw)
