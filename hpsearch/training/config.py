"""A trial's configuration (:class:`TrialConfig`) and the spec of the model it trains (:func:`model_spec`)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
from torch import nn

from hpsearch.data.dataset import Dataset
from hpsearch.model.encoding import fit_encoding, from_units
from hpsearch.model.network import ModelSpec, build_model
from hpsearch.model.user_model import UserModel
from hpsearch.space import DEFAULT_PARAMS, TRAINING_PARAMS, decode_sizes

__all__ = ["NETWORK_PARAMS", "TrialConfig", "make_model", "metric_names", "model_spec"]

#: Hyperparameters of the built-in network alone (a space file's own ``model=`` has none of them).
NETWORK_PARAMS = ("hidden_sizes", "dropout", "activation", "numeric_encoding", "numeric_embedding")


@dataclass(frozen=True)
class TrialConfig:
    """A trial's full effective configuration: its hyperparameters and the search's training settings.

    With the space file's own model (``user_model``), ``model_params`` holds every value but the training
    function's own (``layers`` as a list of widths), and the built-in network's own (:data:`NETWORK_PARAMS`) are
    unused.
    """

    hidden_sizes: tuple[int, ...]
    lr: float = DEFAULT_PARAMS["lr"]
    dropout: float = DEFAULT_PARAMS["dropout"]
    weight_decay: float = DEFAULT_PARAMS["weight_decay"]
    batch_size: int = DEFAULT_PARAMS["batch_size"]
    optimizer: str = DEFAULT_PARAMS["optimizer"]
    momentum: float = DEFAULT_PARAMS["momentum"]
    activation: str = DEFAULT_PARAMS["activation"]
    lr_schedule: str = DEFAULT_PARAMS["lr_schedule"]
    label_smoothing: float = DEFAULT_PARAMS["label_smoothing"]
    adam_beta2: float = DEFAULT_PARAMS["adam_beta2"]
    numeric_encoding: str = DEFAULT_PARAMS["numeric_encoding"]
    numeric_embedding: str = DEFAULT_PARAMS["numeric_embedding"]
    target_transform: str = DEFAULT_PARAMS["target_transform"]
    max_epochs: int = 30
    seed: int = 0
    early_stopping_patience: int | None = None
    cv: int = 0  # folds of the training rows a trial is cross-validated on (``cv=``); 0: none
    metric: str = "val_loss"
    mode: str = "min"
    model_params: dict[str, Any] = field(default_factory=dict)
    user_model: UserModel | None = None

    @classmethod
    def from_params(cls, params: Mapping[str, Any], **settings: Any) -> TrialConfig:
        """Build from a trial's sampled params (``n_layers``/``units_i`` or ``layers``) plus the settings."""
        params = dict(params)
        if settings.get("user_model") is not None:
            return cls._of_user_model(params, settings)
        layers = params.pop("layers", DEFAULT_PARAMS["layers"])
        if "n_layers" in params:
            n_layers = int(params.pop("n_layers"))
            hidden = [int(params.pop(f"units_{i}")) for i in range(n_layers)]
        else:
            hidden = decode_sizes(layers) if isinstance(layers, str) else list(layers)
        for key in [k for k in params if k.startswith("units_")]:
            params.pop(key)  # widths of layers a shallower trial does not have
        known = {k: v for k, v in {**params, **settings}.items() if k in cls.__dataclass_fields__}
        return cls(hidden_sizes=tuple(hidden), **known)

    @classmethod
    def _of_user_model(cls, params: dict[str, Any], settings: Mapping[str, Any]) -> TrialConfig:
        """The training function's own params as fields, every other value the model function's."""
        own = {k: params.pop(k) for k in TRAINING_PARAMS if k in params}
        if "n_layers" in params:
            params["layers"] = [int(params.pop(f"units_{i}")) for i in range(int(params.pop("n_layers")))]
        elif isinstance(params.get("layers"), str):
            params["layers"] = decode_sizes(params["layers"])
        model_params = {k: v for k, v in params.items() if not k.startswith("units_")}
        known = {k: v for k, v in settings.items() if k in cls.__dataclass_fields__}
        return cls(hidden_sizes=(), model_params=model_params, **own, **known)

    def model_config(self) -> dict[str, Any]:
        """What the space file's model function gets: the trial's values, the training function's included."""
        return {**{k: getattr(self, k) for k in TRAINING_PARAMS}, **self.model_params}

    def to_params(self) -> dict[str, Any]:
        """Flat params as MLflow shows them: ``n_layers``, ``units_0``, ... instead of a tuple."""
        if self.user_model is not None:
            skip = {*NETWORK_PARAMS, "model_params", "user_model"}
            flat = {k: getattr(self, k) for k in self.__dataclass_fields__ if k not in skip}
            values = dict(self.model_params)
            sizes = values.pop("layers", None)
            if sizes is not None:
                flat.update(n_layers=len(sizes), **{f"units_{i}": u for i, u in enumerate(sizes)})
            return {**flat, **values}
        flat = {k: v for k, v in asdict(self).items() if k not in ("hidden_sizes", "model_params", "user_model")}
        flat["n_layers"] = len(self.hidden_sizes)
        flat.update({f"units_{i}": u for i, u in enumerate(self.hidden_sizes)})
        return flat


def metric_names(task: str) -> tuple[str, ...]:
    """The metrics reported after every epoch for a task (besides ``epoch``)."""
    if task == "regression":
        return ("train_loss", "val_loss", "val_rmse", "val_mae")
    return ("train_loss", "val_loss", "val_accuracy")


def model_spec(config: TrialConfig, data: Dataset) -> ModelSpec:
    """What rebuilds the trained model: the MLP's shape and its inputs' encoding, or the space file's function and
    the values it got; and how its outputs read in the target's units."""
    user = None
    n_numeric, encoding, embedding = 0, None, "none"
    if config.user_model is not None:
        user = {"function": config.user_model.function, "space_file": Path(config.user_model.path).name,
                "config": config.model_config()}
    elif data.n_numeric:
        n_numeric, embedding = data.n_numeric, config.numeric_embedding
        encoding = _fitted_encoding(config.numeric_encoding, data.train.X, n_numeric)
    transform_mean, transform_std = target_scale(data, config.target_transform)
    return ModelSpec(
        n_features=data.n_features,
        n_outputs=data.n_outputs,
        hidden_sizes=config.hidden_sizes,
        activation=config.activation,
        dropout=config.dropout,
        task=data.task,
        classes=list(data.classes),
        feature_names=list(data.feature_names),
        target_mean=data.target_mean,
        target_std=data.target_std,
        input_shape=data.input_shape,
        user_model=user,
        n_numeric=n_numeric,
        encoding=encoding,
        numeric_embedding=embedding,
        target_transform=config.target_transform if data.task == "regression" else "none",
        transform_mean=transform_mean,
        transform_std=transform_std,
    )


def _fitted_encoding(kind: str, X: np.ndarray, n_numeric: int) -> dict[str, Any] | None:
    """The encoding's numbers fitted on the training rows' numeric columns (the same data: fitted once)."""
    return None if kind == "standard" else _fit_once(kind, _Rows(X), n_numeric)


@lru_cache(maxsize=8)
def _fit_once(kind: str, rows: _Rows, n_numeric: int) -> dict[str, Any] | None:
    return fit_encoding(kind, rows.X[:, :n_numeric])


class _Rows:
    """An array that hashes by identity (the training rows of one Dataset), for :func:`_fit_once`'s cache."""

    def __init__(self, X: np.ndarray) -> None:
        self.X = X

    def __hash__(self) -> int:
        return id(self.X)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Rows) and other.X is self.X


def target_scale(data: Dataset, transform: str) -> tuple[float, float]:
    """The mean and standard deviation of the transformed training target (``log1p``); 0 and 1 otherwise."""
    if data.task != "regression" or transform == "none":
        return 0.0, 1.0
    scaled = from_units(training_target_units(data), transform)
    return float(scaled.mean()), float(scaled.std() or 1.0)


def training_target_units(data: Dataset) -> np.ndarray:
    """The training rows' regression target in its units (float64)."""
    return data.train.y.astype(np.float64) * data.target_std + data.target_mean


def make_model(config: TrialConfig, spec: ModelSpec, data: Dataset) -> nn.Module:
    """The network a trial trains: the space file's own (``model=``), else the MLP of ``spec``."""
    if config.user_model is not None:
        return config.user_model.build(config.model_config(), data.input_shape, data.n_outputs)
    return build_model(spec)


