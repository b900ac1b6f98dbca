"""Data sources, preprocessing fitted on the training split only, the seeded split, and data errors."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from hpsearch import DataError, Search
from hpsearch.data.sources import load_dataset
from tests.conftest import SPACES


def _load(tmp_path: Path, **fields) -> object:
    return load_dataset(Search(**fields), tmp_path / "space.py")


def _table(n: int = 200, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({
        "size": rng.normal(100, 20, n),
        "colour": rng.choice(["red", "green", "blue"], n),
        "label": rng.choice(["cat", "dog"], n),
    })
    frame.loc[::10, "size"] = np.nan
    frame.loc[::7, "colour"] = np.nan
    return frame


def test_csv_with_categoricals_and_missing_values_is_imputed_scaled_and_one_hot(tmp_path: Path):
    _table().to_csv(tmp_path / "t.csv", index=False)
    data = _load(tmp_path, data="csv:t.csv", target="label")
    assert data.task == "binary" and data.classes == ["cat", "dog"]
    assert data.n_features == 1 + 3  # size + one-hot colour
    for split in (data.train, data.val, data.test):
        assert split.X.dtype == np.float32 and not np.isnan(split.X).any()
    one_hot = data.train.X[:, 1:]
    assert set(np.unique(one_hot)) == {0.0, 1.0} and (one_hot.sum(axis=1) == 1).all()
    # The scaler was fitted on the training split only: the training column is centred, the others are not.
    assert abs(data.train.X[:, 0].mean()) < 1e-5 and abs(data.val.X[:, 0].mean()) > 1e-4


def test_split_is_70_15_15_seeded_and_stratified(tmp_path: Path):
    first = _load(tmp_path, data="sklearn:breast_cancer", seed=3)
    again = _load(tmp_path, data="sklearn:breast_cancer", seed=3)
    other = _load(tmp_path, data="sklearn:breast_cancer", seed=4)
    n = len(first.train) + len(first.val) + len(first.test)
    assert n == 569 and abs(len(first.train) / n - 0.70) < 0.01 and abs(len(first.test) / n - 0.15) < 0.01
    assert np.array_equal(first.val.X, again.val.X) and not np.array_equal(first.val.X, other.val.X)
    assert abs(first.train.y.mean() - first.test.y.mean()) < 0.03


@pytest.mark.parametrize(("name", "task", "outputs"),
                         [("digits", "multiclass", 10), ("iris", "multiclass", 3), ("wine", "multiclass", 3),
                          ("breast_cancer", "binary", 1), ("diabetes", "regression", 1)])
def test_sklearn_datasets_infer_their_task(tmp_path: Path, name: str, task: str, outputs: int):
    data = _load(tmp_path, data=f"sklearn:{name}")
    assert data.task == task and data.n_outputs == outputs


def test_regression_target_is_standardised_on_the_training_split(tmp_path: Path):
    data = _load(tmp_path, data="sklearn:diabetes")
    assert abs(data.train.y.mean()) < 1e-5 and data.target_std > 10


def test_a_callable_returning_x_y_or_a_dataframe(tmp_path: Path):
    rng = np.random.default_rng(0)
    arrays = _load(tmp_path, data=lambda: (rng.normal(size=(100, 4)), rng.normal(size=100)))
    assert arrays.task == "regression" and arrays.n_features == 4
    frame = _load(tmp_path, data=_table, target="label")
    assert frame.task == "binary"


def test_parquet_reads_like_csv(tmp_path: Path):
    _table().to_parquet(tmp_path / "t.parquet")
    assert _load(tmp_path, data="parquet:t.parquet", target="label").n_features == 4


def test_the_churn_example_csv_loads_relative_to_its_space_file():
    from hpsearch import load_space

    data = load_dataset(load_space(SPACES / "churn.py"), SPACES / "churn.py")
    assert data.task == "binary" and data.classes == ["no", "yes"]


DATA_ERRORS = [
    ({"data": "csv:missing.csv", "target": "label"}, "file not found"),
    ({"data": "csv:t.csv"}, "needs target='COLUMN'"),
    ({"data": "csv:t.csv", "target": "species"}, "target column 'species' not found; the columns are: size, colour"),
    ({"data": "csv:empty.csv", "target": "label"}, "the file is empty"),
    ({"data": "csv:one_class.csv", "target": "label"}, "has a single class ['cat']"),
    ({"data": "csv:t.csv", "target": "label", "task": "regression"}, "task 'regression' needs a numeric target"),
    ({"data": "csv:t.csv", "target": "colour", "task": "binary"}, "task 'binary' needs exactly 2 classes"),
]


@pytest.mark.parametrize(("fields", "words"), DATA_ERRORS, ids=[w for _, w in DATA_ERRORS])
def test_data_mistakes_are_clear_errors(tmp_path: Path, fields: dict, words: str):
    _table().to_csv(tmp_path / "t.csv", index=False)
    (tmp_path / "empty.csv").write_text("")
    _table().assign(label="cat").to_csv(tmp_path / "one_class.csv", index=False)
    with pytest.raises(DataError) as info:
        _load(tmp_path, **fields)
    assert words in str(info.value) and fields["data"] in str(info.value)


# ------------------------------------------------------------------------------ columns as an analyst sees them
def _messy(n: int = 120, seed: int = 0) -> pd.DataFrame:
    """A table as people have them: a row id, a name per row, a timestamp, a constant, an empty column,
    a boolean, a text column with very many values, and a plain number."""
    rng = np.random.default_rng(seed)
    return pd.DataFrame({
        "rownames": np.arange(1, n + 1),
        "name": [f"person {i}" for i in range(n)],
        "when": [f"2024-{1 + i % 12:02d}-{1 + i % 28:02d} {i % 24:02d}:15:00" for i in range(n)],
        "site": "north",
        "empty": np.nan,
        "member": rng.choice([True, False], n),
        "town": [f"town{i % 45}" for i in range(n)],
        "size": rng.normal(10, 2, n),
        "label": rng.choice(["a", "b"], n),
    })


def test_ids_dates_constants_empty_booleans_and_many_values_are_handled_and_said(tmp_path: Path):
    _messy().to_csv(tmp_path / "t.csv", index=False)
    data = _load(tmp_path, data="csv:t.csv", target="label")
    notes = "\n".join(data.notes)
    assert "dropped rownames: a distinct whole number in every row (an id)" in notes
    assert "dropped name: a distinct value in every row (an id)" in notes
    assert "date column when: turned into numbers (year, month, dayofweek, hour)" not in notes  # one year only
    assert "date column when: turned into numbers (month, dayofweek, hour)" in notes
    assert "dropped site: a single value ('north') in the training split" in notes
    assert "dropped empty: empty in the training split" in notes
    assert re.search(r"capped town: 4\d distinct values, the 30 most frequent kept, the rest as '\(other\)'", notes)
    # when: 3 numbers, member: 0/1, size, town: 30 kept + other
    assert data.feature_names == ["when_month", "when_dayofweek", "when_hour", "member", "town", "size"]
    assert data.n_features == 3 + 1 + 1 + 31


def test_the_served_model_applies_the_same_column_decisions_to_raw_rows(tmp_path: Path):
    from hpsearch.data.dataset import preprocessing_state
    from hpsearch.model.pyfunc import transform

    frame = _messy()
    frame.to_csv(tmp_path / "t.csv", index=False)
    data = _load(tmp_path, data="csv:t.csv", target="label")
    raw = pd.read_csv(tmp_path / "t.csv").drop(columns=["label"])
    state = preprocessing_state(data.preprocessor)
    assert state["columns"] == ["when", "member", "town", "size"]
    assert np.allclose(transform(state, raw), data.preprocessor.transform(raw), atol=1e-5)
    every = np.concatenate([data.train.X, data.val.X, data.test.X])
    assert np.allclose(np.sort(transform(state, raw), axis=0), np.sort(every, axis=0), atol=1e-5)


def test_rows_without_a_target_are_dropped_and_said(tmp_path: Path):
    frame = _table(400)
    frame.loc[: 47, "label"] = None
    frame.to_csv(tmp_path / "t.csv", index=False)
    data = _load(tmp_path, data="csv:t.csv", target="label")
    assert data.notes[0] == "dropped 48 of 400 rows: no value for target 'label'"
    assert len(data.train) + len(data.val) + len(data.test) == 352


@pytest.mark.parametrize(("values", "task", "reason"), [
    (np.arange(200) % 27 + 12, "regression", "target 'y': 27 distinct numbers"),
    (np.arange(200) % 2, "binary", "target 'y': 2 distinct numbers"),
    (np.arange(200) % 5, "multiclass", "target 'y': 5 distinct whole numbers"),
    (np.arange(200) % 5 + 0.5, "regression", "target 'y': 5 distinct numbers"),
    (np.array(["low", "mid", "high", "top"] * 50), "multiclass", "target 'y': 4 labels"),
    (np.array([f"class{i % 40}" for i in range(200)]), "multiclass", "target 'y': 40 labels"),
])
def test_task_is_inferred_as_a_statistician_would_and_the_reason_said(tmp_path: Path, values, task, reason):
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"x": rng.normal(size=200), "y": values})
    data = _load(tmp_path, data=lambda: frame, target="y")
    assert data.task == task and f"task: {task} ({reason})" in data.notes


def test_task_given_in_the_space_file_overrides_the_inference(tmp_path: Path):
    frame = pd.DataFrame({"x": np.arange(200.0), "y": np.arange(200) % 27})
    data = _load(tmp_path, data=lambda: frame, target="y", task="multiclass")
    assert data.task == "multiclass" and data.n_outputs == 27
    assert "task: multiclass (given in the space file)" in data.notes


def test_drop_leaves_out_the_columns_named(tmp_path: Path):
    frame = _table().assign(leak=lambda f: f["label"].eq("dog").astype(float))
    frame.to_csv(tmp_path / "t.csv", index=False)
    data = _load(tmp_path, data="csv:t.csv", target="label", drop=["leak"])
    assert "leak" not in data.feature_names and data.n_features == 4
    assert "dropped leak: named in the space file's drop field" in data.notes
