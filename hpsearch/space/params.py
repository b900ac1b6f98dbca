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
#: The learning rate over a trial's steps: constant; ``cosine`` (a linear warm-up, then a cosine decay to 0); or
#: ``onecycle`` (torch's ``OneCycleLR`` with its defaults, the momentum left alone).
LR_SCHEDULES = ("constant", "cosine", "onecycle")
#: How the built-in network takes the numeric columns (:mod:`hpsearch.model.encoding`).
NUMERIC_ENCODINGS = ("standard", "robust", "quantile", "piecewise_linear")
NUMERIC_EMBEDDINGS = ("none", "periodic")
#: What a regression network learns: the target, or ``log1p`` of it (predictions are turned back).
TARGET_TRANSFORMS = ("none", "log1p")
#: Greedy selection steps of the ensemble a search publishes (``ensemble=True``, or the field left out).
DEFAULT_ENSEMBLE = 25
#: Folds of ``cv=True``; ``cv=`` takes at most MAX_CV. Off by default: on the tables of ``bench/corpus.py`` it
#: cost 5 times the training and did not beat one validation split (docs/benchmarks.md).
DEFAULT_CV, MAX_CV = 5, 20


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
    "lr_schedule": "constant",
    "label_smoothing": 0.0,
    "adam_beta2": 0.999,
    "numeric_encoding": "standard",
    "numeric_embedding": "none",
    "target_transform": "none",
}


#: What the training function itself reads (the optimizer and the batches); with ``model=`` every other name in
#: ``params`` is the user's model function's to read.
TRAINING_PARAMS = ("lr", "weight_decay", "batch_size", "optimizer", "momentum", "lr_schedule", "label_smoothing",
                   "adam_beta2", "target_transform")


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
#: The training choices among them, which an exported file may leave out (their defaults then apply).
TRAINING_CHOICES = ("lr_schedule", "label_smoothing", "adam_beta2", "numeric_encoding", "numeric_embedding",
                    "target_transform")
_INT_PARAMS = ("batch_size", "n_layers")
_STR_PARAMS = ("optimizer", "activation", "lr_schedule", "numeric_encoding", "numeric_embedding", "target_transform")
#: What a trial's params hold besides its hyperparameters (:meth:`hpsearch.training.fit.TrialConfig.to_params`).
_TRIAL_SETTINGS = ("max_epochs", "seed", "early_stopping_patience", "metric", "mode", "cv")


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
