"""Data sources, preprocessing and the seeded train / validation / test split.

Everything is loaded and preprocessed once, in the driver, before any trial starts: trials receive ready
float32 arrays (through Ray's object store), so no trial re-reads a file or refits a scaler. Preprocessing is
scikit-learn's: numeric columns imputed (median) and standardised, string columns imputed and one-hot encoded,
all fitted on the training split only. Before that, :mod:`hpsearch.model.columns` decides on the training rows what
each column is (an id, a date, a boolean, text with too many values...); the decisions are said to the user.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.compose import ColumnTransformer, make_column_selector
from sklearn.impute import SimpleImputer
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from hpsearch.data.dataset import Dataset, Split
from hpsearch.data.targets import encode_target, infer_task, split_indices
from hpsearch.errors import DataError, SpaceError
from hpsearch.model.columns import apply_plan, plan_columns
from hpsearch.space import Search

__all__ = ["Dataset", "Preprocessing", "Split", "load_dataset"]


@dataclass(frozen=True)
class Preprocessing:
    """The column plan (:mod:`hpsearch.model.columns`) and the fitted ColumnTransformer that follows it."""

    plan: dict[str, Any]
    encoder: ColumnTransformer

    def transform(self, frame: pd.DataFrame) -> np.ndarray:
        """Raw rows in, the network's features out (as at fit time)."""
        return self.encoder.transform(apply_plan(self.plan, frame))


def load_dataset(search: Search, space_path: Path) -> Dataset:
    """Load the search's data, split it with the search's seed and preprocess it."""
    if callable(search.data):
        arrays = search.data()
        if _is_array_data(arrays):  # images, sequences: used as given (hpsearch.data.arrays)
            from hpsearch.data.arrays import prepare_arrays

            return prepare_arrays(*arrays, task=search.task, split=search.split, seed=search.seed,
                                  source=_source(search))
        frame, target = _frame_of(arrays, search.target, _source(search))
    else:
        frame, target = _load_frame(search, space_path)
    return prepare(frame, target, task=search.task, split=search.split, seed=search.seed, source=_source(search),
                   drop=search.drop)


def prepare(
    frame: pd.DataFrame, target: str, *, task: str | None, split: tuple[float, float, float], seed: int, source: str,
    drop: tuple[str, ...] = (),
) -> Dataset:
    """Split a table into train / validation / test and fit the preprocessing on the training part.

    The Dataset's ``notes`` say, one line each, what was done to the data: rows without a target, the task and
    why, every column dropped or changed.
    """
    if target not in frame.columns:
        columns = ", ".join(map(str, frame.columns))
        raise DataError(f"{source}: target column {target!r} not found; the columns are: {columns}")
    _check_drop(drop, frame, target, source)
    notes = []
    missing = int(frame[target].isna().sum())
    if missing:
        notes.append(f"dropped {missing} of {len(frame)} rows: no value for target {target!r}")
    frame = frame.dropna(subset=[target])
    if len(frame) < 10:
        raise DataError(f"{source}: needs at least 10 rows with a target, but has {len(frame)}")
    X, y_raw = frame.drop(columns=[target]), frame[target]
    if X.shape[1] == 0:
        raise DataError(f"{source}: has no feature columns besides the target {target!r}")
    inferred, reason = infer_task(y_raw)
    notes.append(f"task: {task} (given in the space file)" if task else f"task: {inferred} ({reason})")
    task = task or inferred
    y, classes = encode_target(y_raw, task, source)
    idx_train, idx_val, idx_test = split_indices(y, task, split, seed)
    plan, column_notes = plan_columns(X.iloc[idx_train], drop)
    notes.extend(column_notes)
    if not plan["inputs"]:
        raise DataError(f"{source}: no feature column is left: {'; '.join(column_notes)}")
    preprocessor = Preprocessing(plan, _make_preprocessor())
    X_train = preprocessor.encoder.fit_transform(apply_plan(plan, X.iloc[idx_train])).astype(np.float32)
    transform = lambda idx: preprocessor.transform(X.iloc[idx]).astype(np.float32)  # noqa: E731
    mean, std = 0.0, 1.0
    if task == "regression":
        mean, std = float(y[idx_train].mean()), float(y[idx_train].std() or 1.0)
        y = ((y - mean) / std).astype(np.float32)
    return Dataset(
        train=Split(X_train, y[idx_train]),
        val=Split(transform(idx_val), y[idx_val]),
        test=Split(transform(idx_test), y[idx_test]),
        task=task,
        feature_names=[str(c) for c in preprocessor.encoder.feature_names_in_],
        classes=classes,
        target_mean=mean,
        target_std=std,
        preprocessor=preprocessor,
        notes=tuple(notes),
    )


# --------------------------------------------------------------------------------------------------- sources
def _source(search: Search) -> str:
    return search.data if isinstance(search.data, str) else f"data={getattr(search.data, '__name__', 'callable')}"


def _load_frame(search: Search, space_path: Path) -> tuple[pd.DataFrame, str]:
    """The raw table of a named source (not a function) and the name of its target column."""
    kind, _, rest = search.data.partition(":")
    if kind == "sklearn":
        return _from_sklearn(rest)
    if search.target is None:
        raise DataError(f"{search.data}: needs target='COLUMN', the column to predict")
    path = (space_path.parent / rest).resolve()
    return _read_table(kind, path, search.data), search.target


def _from_sklearn(name: str) -> tuple[pd.DataFrame, str]:
    import sklearn.datasets

    loader = getattr(sklearn.datasets, f"load_{name}")
    bunch = loader(as_frame=True)
    return bunch.frame, bunch.target.name


def _read_table(kind: str, path: Path, source: str) -> pd.DataFrame:
    if not path.is_file():
        raise DataError(f"{source}: file not found: {path}")
    try:
        frame = pd.read_csv(path) if kind == "csv" else pd.read_parquet(path)
    except pd.errors.EmptyDataError:
        raise DataError(f"{source}: the file is empty: {path}") from None
    except (ValueError, OSError, pd.errors.ParserError) as err:
        raise DataError(f"{source}: cannot read {path}: {err}") from None
    if frame.empty:
        raise DataError(f"{source}: the file has no rows: {path}")
    return frame


def _is_array_data(result: Any) -> bool:
    """``(X, y)`` whose ``X`` has more than two dimensions (N examples of shape (C, H, W), ...)."""
    return (isinstance(result, tuple) and len(result) == 2 and not isinstance(result[0], pd.DataFrame)
            and np.ndim(result[0]) > 2)


def _frame_of(result: Any, target: str | None, source: str) -> tuple[pd.DataFrame, str]:
    """What a data function of the space file returned (``(X, y)``, ``(DataFrame, Series)`` or a DataFrame plus
    ``target``) as a table and the name of its target column."""
    if isinstance(result, pd.DataFrame):
        if target is None:
            raise DataError(f"{source}: returned a DataFrame, so the search needs target='COLUMN'")
        return result, target
    if not (isinstance(result, tuple) and len(result) == 2):
        raise DataError(f"{source}: must return (X, y) or a DataFrame, but returned {type(result).__name__}")
    X, y = result
    frame = X.copy() if isinstance(X, pd.DataFrame) else pd.DataFrame(np.asarray(X)).add_prefix("x")
    if len(frame) != len(y):
        raise DataError(f"{source}: X has {len(frame)} rows but y has {len(y)}")
    name = getattr(y, "name", None) or "target"
    frame[name] = np.asarray(y)
    return frame, name


def _check_drop(drop: tuple[str, ...], frame: pd.DataFrame, target: str, source: str) -> None:
    """The space file's ``drop`` names columns of the data, and not the target."""
    columns = [str(c) for c in frame.columns]
    for name in drop:
        if name == target:
            raise SpaceError(f"{name!r} is the target; drop names feature columns to leave out", field="drop")
        if name not in columns:
            raise SpaceError(f"no column {name!r} in {source}; the columns are: {', '.join(columns)}", field="drop")


# ------------------------------------------------------------------------------------------- preprocessing


def _make_preprocessor() -> ColumnTransformer:
    numeric = make_pipeline(SimpleImputer(strategy="median"), StandardScaler())
    categorical = make_pipeline(
        SimpleImputer(strategy="most_frequent"), OneHotEncoder(handle_unknown="ignore", sparse_output=False)
    )
    return ColumnTransformer(
        [
            ("numeric", numeric, make_column_selector(dtype_include="number")),
            ("categorical", categorical, make_column_selector(dtype_exclude="number")),
        ],
        sparse_threshold=0.0,
    )
