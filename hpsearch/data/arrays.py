"""Examples with more than one dimension (images ``(N, C, H, W)``, sequences ``(N, T, F)``), from a data function.

They are used as given: no column plan, no imputation or scaling (a network for images normalises its own
input, or the data function does). Only the target is encoded, and the examples are split as a table's rows are
(seeded, stratified for classification), with the same task inference.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from hpsearch.data.dataset import ArrayInput, Dataset, Split
from hpsearch.data.targets import encode_target, infer_task, split_indices
from hpsearch.errors import DataError

__all__ = ["prepare_arrays"]


def prepare_arrays(X: Any, y: Any, *, task: str | None, split: tuple[float, float, float], seed: int,
                   source: str) -> Dataset:
    """Split ``(X, y)`` into train / validation / test; ``X`` becomes float32, ``y`` the task's target."""
    try:
        X = np.asarray(X, dtype=np.float32)
    except (TypeError, ValueError) as err:
        raise DataError(f"{source}: X must be an array of numbers, but: {err}") from None
    y_raw = pd.Series(np.asarray(y).reshape(-1), name=getattr(y, "name", None) or "target")
    if len(X) != len(y_raw):
        raise DataError(f"{source}: X has {len(X)} examples but y has {len(y_raw)}")
    if len(X) < 10:
        raise DataError(f"{source}: needs at least 10 examples, but has {len(X)}")
    if not np.isfinite(X).all():
        raise DataError(f"{source}: X holds NaN or infinite values; examples of shape {X.shape[1:]} are used as "
                        "given, without imputation")
    inferred, reason = infer_task(y_raw)
    notes = [f"task: {task} (given in the space file)" if task else f"task: {inferred} ({reason})",
             f"examples of shape {tuple(X.shape[1:])}, used as given (no tabular preprocessing)"]
    task = task or inferred
    y_enc, classes = encode_target(y_raw, task, source)
    idx_train, idx_val, idx_test = split_indices(y_enc, task, split, seed)
    mean, std = 0.0, 1.0
    if task == "regression":
        mean, std = float(y_enc[idx_train].mean()), float(y_enc[idx_train].std() or 1.0)
        y_enc = ((y_enc - mean) / std).astype(np.float32)
    part = lambda idx: Split(np.ascontiguousarray(X[idx]), y_enc[idx])  # noqa: E731
    return Dataset(train=part(idx_train), val=part(idx_val), test=part(idx_test), task=task, feature_names=[],
                   classes=classes, target_mean=mean, target_std=std, preprocessor=ArrayInput(tuple(X.shape[1:])),
                   notes=tuple(notes))
