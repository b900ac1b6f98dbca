"""The simple alternative beside every search on a table: scikit-learn's ``HistGradientBoosting`` at its defaults.

It sees what the network sees: the same columns after the column plan (ids and empty columns left out, dates as
numbers, booleans as 0/1, rare text values as one), text ordinal-encoded, missing values left to the tree. Like a
user who fits it by hand, it trains on the training and validation rows (a default tree needs no validation rows
to choose anything), and it is scored on the search's test rows, which no trial saw. A second or so.
"""

from __future__ import annotations

import json
import threading
import time
from concurrent.futures import Future
from typing import TYPE_CHECKING, Any

import numpy as np

from hpsearch.data.dataset import Dataset
from hpsearch.tracking.schema import TREE_NAME, TREE_PREFIX

if TYPE_CHECKING:
    from mlflow import MlflowClient

__all__ = ["fit_tree", "fit_tree_beside", "record"]


def fit_tree(data: Dataset) -> dict[str, float]:
    """The default tree's test metrics (``test_rmse``, ``test_mae`` or ``test_accuracy``) and ``fit_seconds``;
    empty for data that is not a table (images).

    It fits on one thread: the trials run at the same time (:func:`fit_tree_beside`), and on a busy machine
    OpenMP's threads wait on each other (100,000 rows: 1.2-1.5 s on one thread, 3.7-4.2 s on two, load 5 on 2
    cores). On an idle machine two threads would save about half a second.
    """
    from threadpoolctl import threadpool_limits

    rows, plan = data.rows, getattr(data.preprocessor, "plan", None)
    if rows is None or plan is None:
        return {}
    started = time.perf_counter()
    fit_rows = np.concatenate([rows.train, rows.val])
    X = _ordinal(plan, rows.X, np.concatenate([fit_rows, rows.test]))  # fit rows first: each part is a view
    X_fit, X_test = X[: len(fit_rows)], X[len(fit_rows) :]
    y = rows.y.to_numpy()
    with threadpool_limits(limits=1):
        return {**_fit_and_test(data.task, X_fit, X_test, y, fit_rows, rows.test),
                "fit_seconds": time.perf_counter() - started}


def fit_tree_beside(data: Dataset) -> Future[dict[str, float]]:
    """:func:`fit_tree` in a thread of its own, started before the trials: its result when they end.

    After the trials, the tree was the longest step of a short search (1.6 s of a 5 s search of one trial on
    digits); beside the trials it costs one core that a search of one-thread trials leaves free. The thread is a
    daemon: an interrupted search does not wait for it.
    """
    fitted: Future[dict[str, float]] = Future()

    def fit() -> None:
        fitted.set_running_or_notify_cancel()
        try:
            fitted.set_result(fit_tree(data))
        except BaseException as err:  # noqa: BLE001 - handed to whoever waits for the result
            fitted.set_exception(err)

    threading.Thread(target=fit, name="hpsearch-tree", daemon=True).start()
    return fitted


def _fit_and_test(task: str, X_fit: np.ndarray, X_test: np.ndarray, y: np.ndarray, fit_rows: np.ndarray,
                  test_rows: np.ndarray) -> dict[str, float]:
    from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor

    if task == "regression":
        model = HistGradientBoostingRegressor(random_state=0).fit(X_fit, y[fit_rows].astype(np.float64))
        error = model.predict(X_test) - y[test_rows].astype(np.float64)
        return {"test_rmse": float(np.sqrt(np.mean(error**2))), "test_mae": float(np.mean(np.abs(error)))}
    labels = np.asarray([str(v) for v in y])  # as the network's classes, whatever the labels' type
    model = HistGradientBoostingClassifier(random_state=0).fit(X_fit, labels[fit_rows])
    return {"test_accuracy": float(np.mean(model.predict(X_test) == labels[test_rows]))}


def _ordinal(plan: dict[str, Any], frame: Any, positions: np.ndarray) -> np.ndarray:
    """The rows at ``positions`` after the column plan as one float64 matrix, built a block of rows at a time:
    numbers as they are, text as integer codes in the order the values first appear in the table (missing: NaN,
    left to the tree)."""
    import pandas as pd

    from hpsearch.model.columns import apply_plan
    from hpsearch.model.features import BLOCK_ROWS

    codes = _text_codes(plan, frame)
    matrix = None
    for start in range(0, len(positions), BLOCK_ROWS):
        block = apply_plan(plan, frame.iloc[positions[start : start + BLOCK_ROWS]])
        if matrix is None:
            matrix = np.empty((len(positions), block.shape[1]), dtype=np.float64)
        for j, name in enumerate(block.columns):
            if name in codes:
                found, distinct = pd.factorize(block[name])
                values = np.array([*(codes[name][str(v)] for v in distinct), np.nan], dtype=np.float64)[found]
            else:
                values = block[name].to_numpy(dtype=np.float64, na_value=np.nan)
            matrix[start : start + len(values), j] = values
    return matrix


def _text_codes(plan: dict[str, Any], frame: Any) -> dict[str, dict[str, int]]:
    """For each text column after the column plan, each value's code: 0, 1, ... in the order of the table."""
    import pandas as pd

    from hpsearch.model.columns import apply_plan
    from hpsearch.model.features import BLOCK_ROWS

    codes: dict[str, dict[str, int]] = {}
    for start in range(0, len(frame), BLOCK_ROWS):
        block = apply_plan(plan, frame.iloc[start : start + BLOCK_ROWS])
        for name in block.columns:
            if not (pd.api.types.is_numeric_dtype(block[name]) or pd.api.types.is_bool_dtype(block[name])):
                known = codes.setdefault(name, {})
                for value in pd.factorize(block[name])[1]:
                    known.setdefault(str(value), len(known))
    return codes


def record(client: MlflowClient, run_id: str, figures: dict[str, float]) -> None:
    """The tree's figures on the search's parent run: ``tree_test_*`` metrics and ``tree.json``."""
    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    client.log_batch(run_id, metrics=[Metric(f"{TREE_PREFIX}{k}", float(v), now, 0) for k, v in figures.items()])
    client.log_text(run_id, json.dumps({"model": TREE_NAME, "fitted_on": "train + validation", **figures}, indent=2),
                    "tree.json")
