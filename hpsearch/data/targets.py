"""The target of a search's data: which task it is (inferred, with its reason), its encoding, and the split
of the rows into train, validation and test, the same for tables and arrays.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import LabelEncoder

from hpsearch.errors import DataError, SpaceError

__all__ = ["MAX_INFERRED_CLASSES", "check_target_params", "encode_target", "infer_task", "split_indices",
           "target_note"]

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


def check_target_params(params: dict[str, Any], task: str, y: pd.Series) -> None:
    """The space file's choices that depend on the target fit it: a target transform for a regression whose
    values it can take (``log1p`` needs values above -1), label smoothing for classes."""
    given = {name: _options(params[name]) for name in ("target_transform", "label_smoothing") if name in params}
    transforms = [t for t in given.get("target_transform", ()) if t != "none"]
    if transforms and task != "regression":
        raise SpaceError(f"is for a regression target, but this search's task is {task}; leave it out",
                         field="params.target_transform")
    lowest = float(y.min()) if transforms else 0.0
    if "log1p" in transforms and not lowest > -1:
        raise SpaceError(f"'log1p' needs target values above -1, but {y.name!r} has values down to {lowest:g}; "
                         "use 'none'", field="params.target_transform")
    if any(v for v in given.get("label_smoothing", ()) if v) and task == "regression":
        raise SpaceError("is for classification, but this search's task is regression; leave it out",
                         field="params.label_smoothing")


def _options(spec: Any) -> tuple[Any, ...]:
    """The values a hyperparameter can take: a choice's options, a range's ends, or the value itself."""
    if hasattr(spec, "options"):
        return tuple(spec.options)
    if hasattr(spec, "low"):
        return (spec.low, spec.high)
    return (spec,)


#: Why a regression target is learned as it is unless the space file says otherwise (``bench/model_levers.py``,
#: docs/benchmarks.md): the RMSE is judged in the target's units, and a log scale trades it for relative errors.
TARGET_DEFAULT_REASON = ("on the tables it was measured on, learning log1p of the target raised the RMSE in the "
                         "target's units on 6 of 13, lowered it on none")


def target_note(params: dict[str, Any], task: str, target: str) -> str | None:
    """The line a search prints about what its regression network learns: the target itself or its ``log1p``
    (the space file's ``target_transform``, or the default), and why."""
    if task != "regression":
        return None
    spec = params.get("target_transform")
    name = f"target {target!r}"
    if spec is None:
        return (f"{name}: learned as it is, standardised (target_transform 'none' by default: "
                f"{TARGET_DEFAULT_REASON}); target_transform='log1p' learns its log instead")
    options = _options(spec)
    if len(options) > 1:
        return (f"{name}: target_transform is searched ({', '.join(map(str, options))}); each trial's params say "
                "which it learned, and its predictions are in the target's units")
    if options[0] == "log1p":
        return (f"{name}: the network learns log1p of it, standardised (target_transform='log1p', given in the space "
                "file); its predictions are turned back into the target's units")
    return f"{name}: learned as it is, standardised (target_transform='none', given in the space file)"
