"""The target of a search's data: which task it is (inferred, with its reason), its encoding, and the split
of the rows into train, validation and test, the same for tables and arrays.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import LabelEncoder

from hpsearch.errors import DataError

__all__ = ["MAX_INFERRED_CLASSES", "encode_target", "infer_task", "split_indices"]

#: A numeric target of whole numbers with at most this many distinct values is taken for class labels; with
#: more (a count, miles per gallon, a price) it is a quantity: regression.
MAX_INFERRED_CLASSES = 10


def infer_task(y: pd.Series) -> tuple[str, str]:
    """Binary, multiclass or regression from the target's values, and why, as a statistician would choose.

    Text labels are classes however many; numbers with two values are binary; whole numbers with a few values
    (at most :data:`MAX_INFERRED_CLASSES`) are classes; any other numbers are a quantity: regression.
    """
    values = y.dropna()
    count = int(values.nunique())
    name = f"target {y.name!r}"
    if not pd.api.types.is_numeric_dtype(values) or pd.api.types.is_bool_dtype(values):
        return ("binary" if count == 2 else "multiclass"), f"{name}: {count} labels"
    if count == 2:
        return "binary", f"{name}: 2 distinct numbers"
    whole = bool(np.all(np.mod(values.to_numpy(dtype=np.float64), 1) == 0))
    if whole and count <= MAX_INFERRED_CLASSES:
        return "multiclass", f"{name}: {count} distinct whole numbers"
    return "regression", f"{name}: {count} distinct numbers"


def encode_target(y: pd.Series, task: str, source: str) -> tuple[np.ndarray, list[Any]]:
    if task == "regression":
        if not pd.api.types.is_numeric_dtype(y):
            raise DataError(f"{source}: task 'regression' needs a numeric target, but {y.name!r} holds {y.dtype}")
        return y.to_numpy(dtype=np.float32), []
    encoder = LabelEncoder().fit(y)
    classes = encoder.classes_.tolist()
    if len(classes) < 2:
        raise DataError(f"{source}: the target {y.name!r} has a single class {classes!r}; "
                        "classification needs two or more")
    if task == "binary" and len(classes) != 2:
        raise DataError(f"{source}: task 'binary' needs exactly 2 classes, but {y.name!r} has {len(classes)}")
    codes = encoder.transform(y)
    return (codes.astype(np.float32) if task == "binary" else codes.astype(np.int64)), classes


def split_indices(
    y: np.ndarray, task: str, split: tuple[float, float, float], seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Seeded, stratified for classification when every class has enough rows."""
    indices = np.arange(len(y))
    _, val_frac, test_frac = split

    def cut(idx: np.ndarray, size: float) -> tuple[np.ndarray, np.ndarray]:
        stratify = y[idx] if task != "regression" else None
        try:
            return train_test_split(idx, test_size=size, random_state=seed, stratify=stratify)
        except ValueError:  # a class too small to stratify: fall back to a plain shuffle
            return train_test_split(idx, test_size=size, random_state=seed)

    rest, test = cut(indices, test_frac)
    train, val = cut(rest, val_frac / (1 - test_frac))
    return train, val, test
