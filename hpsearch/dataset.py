"""The preprocessed data as the training function receives it: numpy arrays and what the model needs to know.

Apart from :mod:`hpsearch.data` (which loads and preprocesses with pandas and scikit-learn) so that a Ray worker
that runs a trial unpickles these classes without importing either: a second or more of CPU per worker.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["Dataset", "Split"]


@dataclass(frozen=True)
class Split:
    """One part of the data, ready for torch: features ``X`` (float32) and target ``y``."""

    X: np.ndarray
    y: np.ndarray

    def __len__(self) -> int:
        return len(self.y)


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

    @property
    def n_features(self) -> int:
        return self.train.X.shape[1]

    @property
    def n_outputs(self) -> int:
        return len(self.classes) if self.task == "multiclass" else 1

    def for_trials(self) -> Dataset:
        """The same data without the test split and the fitted preprocessor: what trials are shipped."""
        empty = Split(self.test.X[:0], self.test.y[:0])
        return Dataset(self.train, self.val, empty, self.task, self.feature_names, self.classes,
                       self.target_mean, self.target_std, None)
