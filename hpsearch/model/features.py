"""The fitted preprocessing applied with numpy: raw rows in, the network's float32 features out.

The preprocessing's fitted numbers (medians, means and scales, the most frequent values, the one-hot categories)
are plain JSON data (the *state*, :func:`hpsearch.data.dataset.preprocessing_state`). :func:`transform` applies
them as scikit-learn's fitted ``ColumnTransformer`` would: numeric columns (missing -> median, then standardised)
first, then text columns (missing -> most frequent value, then one-hot over the categories seen in training, an
unseen value all zeros, ``handle_unknown="ignore"``). The search builds its training features with it and the
served model its inputs, so both see the same numbers.

A table of a million rows is handled a block of rows at a time (:data:`BLOCK_ROWS`), each block's columns
written into one float32 array, vectorised: a text column is worked out once per distinct value, then spread to
its rows by integer codes. Memory grows with the features, not with copies of the raw table.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from .columns import apply_plan

__all__ = ["BLOCK_ROWS", "transform", "width"]

#: Rows handled at once: the raw columns of a block as float64 and text codes stay a few MB.
BLOCK_ROWS = 65_536


def width(state: dict[str, Any]) -> int:
    """How many features the preprocessing outputs: one per numeric column, one per category of a text column."""
    return len(state["numeric"]) + sum(len(column["categories"]) for column in state["categorical"])


def transform(state: dict[str, Any], frame: pd.DataFrame, positions: np.ndarray | None = None) -> np.ndarray:
    """The float32 features of the rows of ``frame`` at ``positions`` (every row, in order, when None).

    First the column plan (:func:`hpsearch.model.columns.apply_plan`: ids and empty columns left out, dates as
    numbers, booleans as 0/1, rare text values as one), for a state that has one (models published before the
    plan existed read their columns as they are).
    """
    count = len(frame) if positions is None else len(positions)
    features = np.zeros((count, width(state)), dtype=np.float32)
    for start in range(0, count, BLOCK_ROWS):
        stop = min(start + BLOCK_ROWS, count)
        rows = frame.iloc[start:stop] if positions is None else frame.iloc[positions[start:stop]]
        if "plan" in state:
            rows = apply_plan(state["plan"], rows)
        _fill(state, rows, features[start:stop])
    return features


def _fill(state: dict[str, Any], frame: pd.DataFrame, out: np.ndarray) -> None:
    """Write one block's features into ``out`` (zeros; the same rows)."""
    for j, column in enumerate(state["numeric"]):
        values = pd.to_numeric(frame[column["name"]], errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
        values = np.where(np.isnan(values), column["fill"], values)
        out[:, j] = (values - column["mean"]) / column["scale"]  # in float64, rounded to float32 once
    offset, rows = len(state["numeric"]), np.arange(len(frame))
    for column in state["categorical"]:
        categories = [str(c) for c in column["categories"]]
        at = _category_positions(frame[column["name"]], categories, str(column["fill"]))
        known = at >= 0
        out[rows[known], offset + at[known]] = 1.0
        offset += len(categories)


def _category_positions(raw: pd.Series, categories: list[str], fill: str) -> np.ndarray:
    """Each row's position among ``categories`` (its value as text, missing as ``fill``), -1 where unseen."""
    codes, distinct = pd.factorize(raw)  # each distinct value once; missing as -1
    where = {category: i for i, category in reversed(list(enumerate(categories)))}
    positions = np.array([*(where.get(str(value), -1) for value in distinct), where.get(fill, -1)], dtype=np.int64)
    return positions[codes]  # code -1 (missing) takes the last: the fill's position
