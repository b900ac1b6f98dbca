"""Data sources, preprocessing and the seeded train / validation / test split.

Everything is loaded and preprocessed once, in the driver, before any trial starts: trials receive ready
float32 arrays (through Ray's object store), so no trial re-reads a file or refits a scaler. Preprocessing is
scikit-learn's: numeric columns imputed (median) and standardised, string columns imputed and one-hot encoded,
all fitted on the training split only. Before that, :mod:`hpsearch.model.columns` decides on the training rows what
each column is (an id, a date, a boolean, text with too many values...); the decisions are said to the user.
"""

from __future__ import annotations

import traceback
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.impute import SimpleImputer
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from hpsearch.data.dataset import Dataset, Rows, Split
from hpsearch.data.targets import check_target_params, encode_target, infer_task, split_indices, target_note
from hpsearch.errors import DataError, HpsearchError, SpaceError, nearest_name
from hpsearch.loading import give_back_freed_memory
from hpsearch.model.columns import apply_plan, plan_columns
from hpsearch.model.features import transform
from hpsearch.space import Search

__all__ = ["Dataset", "Preprocessing", "Split", "load_dataset"]


@dataclass(frozen=True)
class Preprocessing:
    """The column plan (:mod:`hpsearch.model.columns`) and the numbers fitted on the training rows after it: the
    JSON ``state`` of :func:`hpsearch.data.dataset.preprocessing_state`, applied by
    :func:`hpsearch.model.features.transform` (as the served model applies it)."""

    state: dict[str, Any]

    @property
    def plan(self) -> dict[str, Any]:
        return self.state["plan"]

    def transform(self, frame: pd.DataFrame) -> np.ndarray:
        """Raw rows in, the network's float32 features out (as at fit time)."""
        return transform(self.state, frame)


def load_dataset(search: Search, space_path: Path) -> Dataset:
    """Load the search's data, split it with the search's seed and preprocess it."""
    if callable(search.data):
        arrays = _call_data_function(search.data, space_path)
        if _is_array_data(arrays):  # images, sequences: used as given (hpsearch.data.arrays)
            from hpsearch.data.arrays import prepare_arrays

            return prepare_arrays(*arrays, task=search.task, split=search.split, seed=search.seed,
                                  source=_source(search))
        frame, target = _frame_of(arrays, search.target, _source(search))
    else:
        frame, target = _load_frame(search, space_path)
    data = prepare(frame, target, task=search.task, split=search.split, seed=search.seed, source=_source(search),
                   drop=search.drop)
    check_target_params(search.params, data.task, frame[target].dropna())
    note = target_note(search.params, data.task, target)
    return replace(data, notes=(*data.notes, note)) if note else data


def prepare(
    frame: pd.DataFrame, target: str, *, task: str | None, split: tuple[float, float, float], seed: int, source: str,
    drop: tuple[str, ...] = (),
) -> Dataset:
    """Split a table into train / validation / test and fit the preprocessing on the training part.

    The Dataset's ``notes`` say, one line each, what was done to the data: rows without a target, the task and
    why, every column dropped or changed.
    """
    if target not in frame.columns:
        columns = [str(c) for c in frame.columns]
        guess = nearest_name(str(target), columns)
        raise DataError(f"{source}: target column {target!r} not found; the columns are: {', '.join(columns)}"
                        + (f"; did you mean {guess!r}?" if guess else ""))
    _check_drop(drop, frame, target, source)
    notes = []
    missing = int(frame[target].isna().sum())
    if missing:
        notes.append(f"dropped {missing} of {len(frame)} rows: no value for target {target!r}")
    if missing:
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
    train_rows = X.iloc[idx_train]
    plan, column_notes = plan_columns(train_rows, drop)
    notes.extend(column_notes)
    if not plan["inputs"]:
        raise DataError(f"{source}: no feature column is left: {'; '.join(column_notes)}")
    _check_no_infinity(X[[c for c in X.columns if str(c) in plan["inputs"]]], source)
    planned = apply_plan(plan, train_rows)
    feature_names = [str(c) for c in planned.columns]
    preprocessor = Preprocessing(fit_state(plan, planned))
    del train_rows, planned  # the features are built a block of rows at a time, from the table itself
    features = lambda idx: transform(preprocessor.state, X, idx)  # noqa: E731
    mean, std = 0.0, 1.0
    if task == "regression":
        mean, std = float(y[idx_train].mean()), float(y[idx_train].std() or 1.0)
        y = ((y - mean) / std).astype(np.float32)
    train, val, test = features(idx_train), features(idx_val), features(idx_test)
    give_back_freed_memory()
    return Dataset(
        train=Split(train, y[idx_train]),
        val=Split(val, y[idx_val]),
        test=Split(test, y[idx_test]),
        task=task,
        feature_names=feature_names,
        classes=classes,
        target_mean=mean,
        target_std=std,
        preprocessor=preprocessor,
        notes=tuple(notes),
        n_numeric=len(preprocessor.state["numeric"]),
        rows=Rows(X, y_raw, idx_train, idx_val, idx_test),
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


def _call_data_function(function: Any, space_path: Path) -> Any:
    """What the space file's data function returns; what it raises is a :class:`SpaceError` naming the function
    and the space file's line where it was raised."""
    try:
        return function()
    except HpsearchError:
        raise
    except Exception as err:  # noqa: BLE001 - the user's code: one line naming where it failed
        code = getattr(function, "__code__", None)
        lines = [f.lineno for f in traceback.extract_tb(err.__traceback__) if code and f.filename == code.co_filename]
        line = lines[-1] if lines else getattr(code, "co_firstlineno", None)
        name = getattr(function, "__name__", "data")
        raise SpaceError(f"{name}() raised {type(err).__name__}: {err}", field="data",
                         path=f"{space_path}:{line}" if line else str(space_path)) from None


def _check_no_infinity(features: pd.DataFrame, source: str) -> None:
    """Infinite numbers are no value a network can learn from, nor a missing one to impute: refused, named."""
    numeric = features.select_dtypes("number")
    if numeric.empty:
        return
    counts = np.array([np.isinf(numeric[c].to_numpy(dtype=np.float64, na_value=np.nan)).sum() for c in numeric])
    if counts.any():
        shown = ", ".join(f"column {str(c)!r} ({n} {'row' if n == 1 else 'rows'})"
                          for c, n in zip(numeric.columns, counts, strict=True) if n)
        raise DataError(f"{source}: infinite values in {shown}; replace them with numbers, or with NaN "
                        "(missing values are imputed)")


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
def fit_state(plan: dict[str, Any], train: pd.DataFrame) -> dict[str, Any]:
    """The preprocessing fitted on the training rows after the column plan, as plain JSON data (the ``state`` of
    :func:`hpsearch.data.dataset.preprocessing_state`).

    Numeric columns (the plan's numbers, booleans and date parts): scikit-learn's ``SimpleImputer`` (median) then
    ``StandardScaler``; text columns: ``SimpleImputer`` (most frequent) then ``OneHotEncoder``. Each is fitted on
    one column at a time, as a ``ColumnTransformer`` of them would fit it, so that a million rows never become a
    float64 copy of the whole table.
    """
    state: dict[str, Any] = {"columns": list(plan["inputs"]), "numeric": [], "categorical": [], "plan": plan}
    for name in train.columns:
        column = train[name]
        if pd.api.types.is_numeric_dtype(column):
            values = column.to_numpy(dtype=np.float64, na_value=np.nan)[:, None]
            imputer = SimpleImputer(strategy="median").fit(values)
            scaler = StandardScaler().fit(imputer.transform(values))
            state["numeric"].append({"name": str(name), "fill": float(imputer.statistics_[0]),
                                     "mean": float(scaler.mean_[0]), "scale": float(scaler.scale_[0])})
        else:
            values = column.to_numpy(dtype=object)[:, None]
            imputer = SimpleImputer(strategy="most_frequent").fit(values)
            encoder = OneHotEncoder(handle_unknown="ignore").fit(imputer.transform(values))
            state["categorical"].append({"name": str(name), "fill": _plain(imputer.statistics_[0]),
                                         "categories": [_plain(c) for c in encoder.categories_[0]]})
    return state


def _plain(value: Any) -> Any:
    """A numpy scalar as a plain Python value, so that it goes to JSON."""
    return value.item() if isinstance(value, np.generic) else value
