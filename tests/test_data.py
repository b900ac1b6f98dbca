"""Data sources, preprocessing fitted on the training split only, the seeded split, and data errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from hpsearch import DataError, Search
from hpsearch.data import load_dataset
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
