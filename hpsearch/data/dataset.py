"""The preprocessed data as the training function receives it: numpy arrays and what the model needs to know.

Apart from :mod:`hpsearch.data.sources` (which loads and preprocesses with pandas and scikit-learn) so that a Ray worker
that runs a trial unpickles these classes without importing either: a second or more of CPU per worker.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import numpy as np

__all__ = ["ArrayInput", "Dataset", "Rows", "Split", "preprocessing_state"]


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
class Rows:
    """A table's rows as loaded, before any preprocessing, and the positions of each split in them: what the
    driver scores served models and the tree baseline on (never shipped to trials)."""

    X: Any  # a pandas DataFrame: the feature columns as the user has them
    y: Any  # a pandas Series: the target as the user has it
    train: np.ndarray
    val: np.ndarray
    test: np.ndarray


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
    #: The first ``n_numeric`` features are the numeric columns, standardised (the one-hot columns follow); None
    #: where that is not known (arrays given as they are): no encoding of numeric inputs then.
    n_numeric: int | None = None
    rows: Rows | None = None  # a table's raw rows (None for arrays, and in trials)

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

    def folds(self, k: int, seed: int) -> list[Dataset]:
        """The training rows cut into ``k`` folds (seeded; a class's rows spread evenly over them): for each fold,
        the data whose training rows are the other folds and whose validation rows are that fold (for ``cv=``)."""
        order = np.random.default_rng(seed).permutation(len(self.train))
        if self.task != "regression":  # grouped by class, shuffled within: each class dealt round the folds
            order = order[np.argsort(self.train.y[order], kind="stable")]
        fold = np.empty(len(order), dtype=np.int64)
        fold[order] = np.arange(len(order)) % k
        X, y = self.train.X, self.train.y
        return [replace(self, train=Split(X[fold != i], y[fold != i]), val=Split(X[fold == i], y[fold == i]))
                for i in range(k)]

    def for_trials(self) -> Dataset:
        """The same data without the test split and the fitted preprocessor: what trials are shipped."""
        empty = Split(self.test.X[:0], self.test.y[:0])
        return Dataset(self.train, self.val, empty, self.task, self.feature_names, self.classes,
                       self.target_mean, self.target_std, None, self.notes, self.n_numeric)


def preprocessing_state(preprocessor: Any) -> dict[str, Any]:
    """The fitted preprocessing (:class:`hpsearch.data.sources.Preprocessing`) as plain JSON data.

    ``columns`` are the raw columns the model reads, in the table's order (the model's input signature);
    ``plan`` is :mod:`hpsearch.model.columns`' plan that turns them into the columns the numbers were fitted on
    (dates into numbers, booleans into 0/1, rare text values into one); ``numeric`` and ``categorical`` are those
    numbers (:func:`hpsearch.data.sources.fit_state`), in the order of the features the network's first layer was
    trained on (:func:`hpsearch.model.features.transform`).
    """
    if isinstance(preprocessor, ArrayInput):  # examples used as given: a served model takes arrays of this shape
        return {"tensor_shape": list(preprocessor.shape)}
    return dict(preprocessor.state)
