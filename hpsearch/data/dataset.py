"""The preprocessed data as the training function receives it: numpy arrays and what the model needs to know.

Apart from :mod:`hpsearch.data.sources` (which loads and preprocesses with pandas and scikit-learn) so that a Ray worker
that runs a trial unpickles these classes without importing either: a second or more of CPU per worker.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["ArrayInput", "Dataset", "Split", "preprocessing_state"]


@dataclass(frozen=True)
class Split:
    """One part of the data, ready for torch: features ``X`` (float32) and target ``y``."""

    X: np.ndarray
    y: np.ndarray

    def __len__(self) -> int:
        return len(self.y)


@dataclass(frozen=True)
class ArrayInput:
    """The "preprocessing" of examples with more than one dimension (images, sequences): none, they are used as
    given; what a served model needs to know is their shape."""

    shape: tuple[int, ...]


@dataclass(frozen=True)
class Dataset:
    """The preprocessed data of a search and what the model needs to know about it.

    ``y`` holds class indices (int64) for multiclass, 0/1 (float32) for binary, and the standardised target
    (float32) for regression; ``target_mean`` and ``target_std`` turn predictions back into the target's units.
    """

    train: Split
    val: Split
    test: Split
    task: str
    feature_names: list[str]
    classes: list[Any]
    target_mean: float = 0.0
    target_std: float = 1.0
    preprocessor: Any = None
    notes: tuple[str, ...] = ()

    @property
    def n_features(self) -> int:
        return self.train.X.shape[1]

    @property
    def input_shape(self) -> tuple[int, ...]:
        """One example's shape: ``(n_features,)`` for a table, ``(C, H, W)`` for images."""
        return tuple(int(n) for n in self.train.X.shape[1:])

    @property
    def n_outputs(self) -> int:
        return len(self.classes) if self.task == "multiclass" else 1

    def for_trials(self) -> Dataset:
        """The same data without the test split and the fitted preprocessor: what trials are shipped."""
        empty = Split(self.test.X[:0], self.test.y[:0])
        return Dataset(self.train, self.val, empty, self.task, self.feature_names, self.classes,
                       self.target_mean, self.target_std, None, self.notes)


def preprocessing_state(preprocessor: Any) -> dict[str, Any]:
    """The fitted preprocessing (:class:`hpsearch.data.sources.Preprocessing`) as plain JSON data.

    ``columns`` are the raw columns the model reads, in the table's order (the model's input signature);
    ``plan`` is :mod:`hpsearch.model.columns`' plan that turns them into the ColumnTransformer's input (dates into
    numbers, booleans into 0/1, rare text values into one); ``numeric`` and ``categorical`` are the
    ColumnTransformer's fitted numbers, in the order of its output, which the network's first layer was trained on.
    """
    if isinstance(preprocessor, ArrayInput):  # examples used as given: a served model takes arrays of this shape
        return {"tensor_shape": list(preprocessor.shape)}
    encoder = getattr(preprocessor, "encoder", preprocessor)  # a bare ColumnTransformer: no plan
    plan = getattr(preprocessor, "plan", None)
    columns = plan["inputs"] if plan else [str(c) for c in encoder.feature_names_in_]
    state: dict[str, Any] = {"columns": list(columns), "numeric": [], "categorical": []}
    if plan:
        state["plan"] = plan
    for name, pipeline, columns in encoder.transformers_:
        if name not in ("numeric", "categorical") or len(columns) == 0:
            continue
        imputer = pipeline.steps[0][1]
        if name == "numeric":
            scaler = pipeline.steps[1][1]
            for i, column in enumerate(columns):
                state["numeric"].append({"name": str(column), "fill": float(imputer.statistics_[i]),
                                         "mean": float(scaler.mean_[i]), "scale": float(scaler.scale_[i])})
        else:
            encoder = pipeline.steps[1][1]
            for i, column in enumerate(columns):
                state["categorical"].append({"name": str(column), "fill": _plain(imputer.statistics_[i]),
                                             "categories": [_plain(c) for c in encoder.categories_[i]]})
    return state


def _plain(value: Any) -> Any:
    """A numpy scalar as a plain Python value, so that it goes to JSON."""
    return value.item() if isinstance(value, np.generic) else value
