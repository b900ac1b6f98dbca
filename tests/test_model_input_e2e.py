"""End-to-end: the model a search hands out takes rows as users have them, and loads without hpsearch.

One tiny search (2 trials, 2 epochs, in-process) on a real table with whole-number, true/false, text and
missing values is shared by the module; its registered model is then asked in every way users ask: with
``hpsearch predict`` on the training file itself, and with ``mlflow.pyfunc`` on ``pd.read_csv`` rows in
pandas' default, nullable and Arrow-backed dtypes, whole numbers given as floats, a column null in every row,
columns shuffled, extra columns, and a value that is not a number.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import mlflow.artifacts
import mlflow.pyfunc
import numpy as np
import pandas as pd
import pytest
import sklearn.datasets
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from hpsearch.cli.main import main
from tests.conftest import REPO, write_space
from tests.isolation import python_without_hpsearch

pytestmark = pytest.mark.e2e

TARGET = "progressed"


def _patients() -> pd.DataFrame:
    """scikit-learn's 442 diabetes patients as a clinic's CSV has them: ages and children as whole numbers
    (int64), sex as text, a true/false column, a clinic code that is digits (``07``) in all but the last rows,
    missing values, and a yes/no target."""
    raw = sklearn.datasets.load_diabetes(as_frame=True, scaled=False).frame
    rng = np.random.default_rng(7)
    frame = pd.DataFrame({
        "age": raw["age"].astype("int64"),
        "sex": np.where(raw["sex"] == 1, "female", "male"),
        "bmi": raw["bmi"],
        "bp": raw["bp"],
        "children": rng.integers(0, 5, len(raw)),
        "smoker": rng.random(len(raw)) < 0.3,
        "s5": raw["s5"],
        "clinic": [f"{c:02d}" for c in rng.integers(1, 13, len(raw))],
        TARGET: np.where(raw["target"] > raw["target"].median(), "yes", "no"),
    })
    frame.loc[::17, "bmi"] = np.nan
    frame.loc[::23, "sex"] = None
    frame.loc[430:, "clinic"] = "A3"  # the file's only code that is not digits, in its last rows
    return frame


@pytest.fixture(scope="module")
def search(tmp_path_factory):
    """The folder of one finished search on patients.csv, with its registered model downloaded to ./model."""
    directory = tmp_path_factory.mktemp("patients")
    _patients().to_csv(directory / "patients.csv", index=False)
    space = write_space(directory, f"""
search = Search(data="csv:patients.csv", target="{TARGET}", params={{"layers": [8], "lr": loguniform(1e-3, 1e-2)}},
                num_samples=2, max_epochs=2, seed=1)
""")
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(directory)
        assert main(["run", str(space), "--executor", "local", "--experiment", "patients", "--no-plots", "-q"]) == 0
    client = MlflowClient(_uri(directory), registry_uri=_uri(directory))
    source = client.get_model_version_download_uri("patients", client.get_model_version_by_alias("patients",
                                                                                                 "best").version)
    local = mlflow.artifacts.download_artifacts(artifact_uri=source, dst_path=str(directory / "download"),
                                                tracking_uri=_uri(directory))
    Path(local).rename(directory / "model")
    return directory


@pytest.fixture(scope="module")
def model(search):
    return mlflow.pyfunc.load_model(str(search / "model"))


def _uri(directory: Path) -> str:
    return f"sqlite:///{directory / 'mlruns' / 'mlflow.db'}"


def _rows(search: Path, **read_csv) -> pd.DataFrame:
    """The training file as pandas reads it, target included (the model ignores it)."""
    return pd.read_csv(search / "patients.csv", **read_csv)


def _predict(search: Path, *args: str) -> list[str]:
    return ["predict", "models:/patients@best", *args, "--tracking-uri", _uri(search)]


# ----------------------------------------------------------------------------------------- mlflow.pyfunc
def test_the_model_predicts_the_training_file_as_pandas_reads_it(search, model):
    rows = _rows(search)
    assert {rows[c].dtype.kind for c in ("age", "children")} == {"i"} and rows["smoker"].dtype == bool
    predicted = model.predict(rows)
    assert len(predicted) == len(rows) and set(predicted["prediction"]) <= {"yes", "no"}
    np.testing.assert_allclose(predicted["probability_yes"] + predicted["probability_no"], 1.0, atol=1e-9)


@pytest.mark.parametrize("variant", [
    "nullable dtypes", "arrow dtypes", "whole numbers as floats", "columns shuffled", "extra columns",
    "numbers as text",
])
def test_the_model_gives_the_same_predictions_whatever_form_the_rows_come_in(search, model, variant):
    rows = _rows(search)
    if variant == "nullable dtypes":
        changed = rows.convert_dtypes()
        assert str(changed["age"].dtype) == "Int64" and str(changed["smoker"].dtype) == "boolean"
    elif variant == "arrow dtypes":
        changed = _rows(search, dtype_backend="pyarrow")
        assert "pyarrow" in str(changed["age"].dtype) and "pyarrow" in str(changed["sex"].dtype)
    elif variant == "whole numbers as floats":
        changed = rows.astype({"age": "float64", "children": "float64"})
    elif variant == "columns shuffled":
        changed = rows[list(reversed(rows.columns))]
    elif variant == "extra columns":
        changed = rows.assign(patient_id=range(len(rows)), note="seen twice")
    else:  # as a JSON client may send them
        changed = rows.astype({"age": str, "bmi": object})
        changed["bmi"] = [None if pd.isna(v) else str(v) for v in rows["bmi"]]
    expected = model.predict(rows)
    predicted = model.predict(changed)
    assert list(predicted["prediction"]) == list(expected["prediction"])
    np.testing.assert_allclose(predicted["probability_yes"], expected["probability_yes"], rtol=1e-6)


def test_each_row_is_answered_as_if_it_came_alone(search, model):
    """Text is read once per distinct value and rows a block at a time: a row's answer must not depend on the
    rows beside it (missing values, a category never seen in training, ids and booleans included)."""
    rows = _rows(search).assign(patient_id=lambda f: 1000 + 7 * np.arange(len(f))).astype({"smoker": object})
    rows.loc[[0, 5, 9], "sex"] = "other"  # never seen in training
    rows.loc[[2, 5], "smoker"] = None
    together = model.predict(rows)
    for i in [0, 1, 2, 5, 9, 17, 23, 441]:
        alone = model.predict(rows.iloc[[i]])
        assert alone["prediction"].iloc[0] == together["prediction"].iloc[i]
        np.testing.assert_allclose(alone["probability_yes"].iloc[0], together["probability_yes"].iloc[i], rtol=1e-6)


def test_a_column_null_in_every_row_is_read_as_missing_values(search, model):
    rows = _rows(search)
    empty = rows.assign(bmi=np.nan, sex=None)
    predicted = model.predict(empty)
    both_missing = rows["bmi"].isna() & rows["sex"].isna()  # these rows were already missing both
    assert both_missing.sum() >= 1 and predicted["probability_yes"].notna().all()
    np.testing.assert_allclose(predicted["probability_yes"][both_missing],
                               model.predict(rows)["probability_yes"][both_missing], rtol=1e-6)
    arrow_empty = _rows(search, dtype_backend="pyarrow").assign(bmi=pd.Series([None] * len(rows), dtype=object))
    np.testing.assert_allclose(model.predict(arrow_empty)["probability_yes"][both_missing],
                               predicted["probability_yes"][both_missing], rtol=1e-6)


def test_a_value_that_is_not_a_number_is_an_error_naming_the_column_and_the_row(search, model):
    rows = _rows(search).astype({"age": object})
    rows.loc[3, "age"] = "abc"
    with pytest.raises(MlflowException) as caught:
        model.predict(rows)
    assert str(caught.value) == "column 'age', row 3: 'abc' is not a number"


def test_the_model_loads_and_predicts_where_hpsearch_is_not_installed(search, tmp_path):
    """A Python where hpsearch cannot be imported (tests/isolation.py), its dependencies can."""
    script = f"""
import importlib.util, sys
try:
    import hpsearch
    raise AssertionError("hpsearch is importable")
except ModuleNotFoundError:
    pass
import mlflow.pyfunc, pandas as pd
predicted = mlflow.pyfunc.load_model({str(search / 'model')!r}).predict(pd.read_csv({str(search / 'patients.csv')!r}))
print(json.dumps({{"rows": len(predicted), "labels": sorted(set(predicted["prediction"])),
                  "hpsearch_imported": "hpsearch" in sys.modules,
                  "code": sys.modules[type(predicted).__module__.split(".")[0]].__name__}}))
"""
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}  # no PYTHONPATH: not this checkout either
    done = subprocess.run(python_without_hpsearch("import json\n" + script), cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    answer = json.loads(done.stdout.strip().splitlines()[-1])
    assert answer["rows"] == len(_patients()) and set(answer["labels"]) <= {"yes", "no"}
    assert not answer["hpsearch_imported"]


def test_the_model_says_which_types_its_inputs_are_and_needs_no_scikit_learn(search, model):
    metadata = model.metadata
    assert list(metadata.metadata["hpsearch_input_columns"]) == ["age", "sex", "bmi", "bp", "children", "smoker", "s5",
                                                               "clinic"]
    assert metadata.metadata["hpsearch_input_types"]["age"] == "double"
    assert metadata.metadata["hpsearch_input_types"]["sex"] == "string"
    requirements = (search / "model" / "requirements.txt").read_text().split()
    assert sorted(r.split("==")[0] for r in requirements) == ["mlflow", "numpy", "pandas", "torch"]
    assert all("==" in r for r in requirements)


# ------------------------------------------------------------------------------------------ hpsearch predict
def test_predict_writes_csv_to_standard_output_and_notes_to_standard_error(search, capsys):
    assert main(_predict(search, str(search / "patients.csv"))) == 0
    out, err = capsys.readouterr()
    predicted = pd.read_csv(io.StringIO(out))
    assert list(predicted.columns) == ["prediction", "probability_no", "probability_yes"]
    assert len(predicted) == len(_patients())
    assert err.strip() == f"ignoring the columns the model does not take: {TARGET}"


def test_predict_keeps_the_named_input_columns_beside_the_predictions(search, tmp_path, capsys):
    rows = _rows(search)
    rows.insert(0, "patient_id", [f"p{i:03d}" for i in range(len(rows))])
    rows.to_csv(tmp_path / "input.csv", index=False)
    assert main(_predict(search, str(tmp_path / "input.csv"), "--keep", "patient_id", "--keep", "age",
                         "-o", str(tmp_path / "out.csv"))) == 0
    out = pd.read_csv(tmp_path / "out.csv")
    assert list(out.columns) == ["patient_id", "age", "prediction", "probability_no", "probability_yes"]
    assert list(out["patient_id"]) == list(rows["patient_id"]) and list(out["age"]) == list(rows["age"])
    assert "wrote 442 predictions" in capsys.readouterr().out

    assert main(_predict(search, str(tmp_path / "input.csv"), "--keep", "all")) == 0
    out = pd.read_csv(io.StringIO(capsys.readouterr().out))
    assert list(out.columns) == [*rows.columns, "prediction", "probability_no", "probability_yes"]


@pytest.mark.parametrize(("change", "args", "message"), [
    (None, ["--keep", "patient_id"], "patients.csv: --keep patient_id: no such column; the file has age, sex"),
    ("abc in age", [], "patients.csv: column 'age', row 3: 'abc' is not a number (line 5 of the file)"),
    ("no sex column", [], "but sex is missing"),
])
def test_predict_refuses_a_bad_request_in_one_line_and_writes_nothing(search, tmp_path, capsys, change, args,
                                                                        message):
    rows = _rows(search)
    if change == "abc in age":
        rows = rows.astype({"age": object})
        rows.loc[3, "age"] = "abc"
    elif change == "no sex column":
        rows = rows.drop(columns=["sex"])
    rows.to_csv(tmp_path / "patients.csv", index=False)
    code = main(_predict(search, str(tmp_path / "patients.csv"), *args, "-o", str(tmp_path / "out.csv")))
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and err.startswith("error: ") and message in err, err
    assert not (tmp_path / "out.csv").exists()


def test_predict_with_a_bad_request_writes_nothing_to_standard_output(search, tmp_path, capsys):
    rows = _rows(search).astype({"bmi": object})
    rows.loc[440, "bmi"] = "n/a?"
    rows.to_csv(tmp_path / "input.csv", index=False)
    assert main(_predict(search, str(tmp_path / "input.csv"))) == 2
    out, err = capsys.readouterr()
    assert out == "" and "column 'bmi', row 440: 'n/a?' is not a number" in err



def test_predict_reads_a_file_larger_than_a_chunk_as_one(search, tmp_path, capsys, monkeypatch):
    """A file of several chunks: one prediction per input row, in order, the same as predicting it at once (the
    clinic codes of the chunks of digits only are read as text, as training read them)."""
    from hpsearch.results import predict

    monkeypatch.setattr(predict, "CHUNK_ROWS", 100)  # 442 rows: 5 chunks, the last of 42
    rows = _rows(search)
    rows.loc[[120, 350], "sex"] = "other"  # a category never seen in training, in two chunks
    rows = rows.astype({"age": "Int64"})
    rows.loc[210, "age"] = None  # a gap in a column of whole numbers, in one chunk
    rows.to_csv(tmp_path / "input.csv", index=False)
    assert main(_predict(search, str(tmp_path / "input.csv"), "--keep", "all", "-o", str(tmp_path / "out.csv"))) == 0
    assert "wrote 442 predictions" in capsys.readouterr().out
    out = pd.read_csv(tmp_path / "out.csv")
    expected = mlflow.pyfunc.load_model(str(search / "model")).predict(pd.read_csv(tmp_path / "input.csv"))
    pd.testing.assert_frame_equal(out[rows.columns], pd.read_csv(tmp_path / "input.csv"))
    as_text = {"dtype": str, "keep_default_na": False}  # every kept column written as the file has it: 59, not 59.0
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "out.csv", **as_text)[rows.columns],
                                  pd.read_csv(tmp_path / "input.csv", **as_text))
    assert list(out["prediction"]) == list(expected["prediction"])
    np.testing.assert_allclose(out["probability_yes"], expected["probability_yes"], rtol=1e-6)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["input.csv", "out.csv"]  # no temporary file left


@pytest.mark.parametrize("output", ["file", "standard output"])
def test_predict_refusing_a_later_chunk_writes_nothing(search, tmp_path, capsys, monkeypatch, output):
    from hpsearch.results import predict

    monkeypatch.setattr(predict, "CHUNK_ROWS", 100)
    rows = _rows(search).astype({"bmi": object})
    rows.loc[440, "bmi"] = "n/a?"  # in the fifth chunk: four chunks were good
    rows.to_csv(tmp_path / "input.csv", index=False)
    args = ["-o", str(tmp_path / "out.csv")] if output == "file" else []
    assert main(_predict(search, str(tmp_path / "input.csv"), *args)) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.strip().endswith("column 'bmi', row 440: 'n/a?' is not a number (line 442 of the file)")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["input.csv"]


def test_predict_to_a_reader_that_stops_early_ends_quietly(search, tmp_path):
    """`hpsearch predict ... | head`: the closed pipe ends the writing with exit 0, not a BrokenPipeError."""
    pd.concat([_rows(search)] * 10).to_csv(tmp_path / "many.csv", index=False)  # more than a pipe holds
    command = [sys.executable, "-m", "hpsearch", *_predict(search, str(tmp_path / "many.csv"))]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, text=True) as process:
        assert process.stdout.readline().strip() == "prediction,probability_no,probability_yes"
        process.stdout.close()
        err = process.stderr.read()
    assert process.returncode == 0 and "Traceback" not in err, err
