"""End-to-end: a trial's model is its best epoch's, and a network's training choices (its inputs' encoding, its
target's transform) travel with the model a search publishes, which answers raw rows in the target's units."""

from __future__ import annotations

from pathlib import Path

import mlflow.pyfunc
import numpy as np
import pandas as pd
import pytest
import sklearn.datasets
from mlflow import MlflowClient

from hpsearch.cli.main import main
from hpsearch.data.targets import split_indices
from tests.conftest import write_space

pytestmark = pytest.mark.e2e

TARGET = "progress"


def _patients(folder: Path) -> pd.DataFrame:
    """scikit-learn's diabetes patients as a CSV has them (raw units, sex as text), written to patients.csv."""
    frame = sklearn.datasets.load_diabetes(as_frame=True, scaled=False).frame.rename(columns={"target": TARGET})
    frame["sex"] = np.where(frame["sex"] == 1, "female", "male")
    frame.to_csv(folder / "patients.csv", index=False)
    return frame


def _search(folder: Path, params: str, *args: str, epochs: int = 3) -> tuple[MlflowClient, dict]:
    """One search of one trial on patients.csv; the store's client and the best trial's run."""
    space = write_space(folder, f'search = Search(data="csv:patients.csv", target="{TARGET}", params={{{params}}}, '
                                f'num_samples=1, max_epochs={epochs}, scheduler="fifo")\n')
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(folder)
        assert main(["run", str(space), "--experiment", "patients", "--no-plots", *args]) == 0
    client = MlflowClient(f"sqlite:///{folder / 'mlruns' / 'mlflow.db'}")
    [trial] = client.search_runs([client.get_experiment_by_name("patients").experiment_id],
                                 "tags.`hpsearch.kind` = 'trial'")
    return client, trial


def _served(client: MlflowClient, folder: Path) -> mlflow.pyfunc.PyFuncModel:
    version = client.get_model_version_by_alias("patients", "best")
    return mlflow.pyfunc.load_model(client.get_model_version_download_uri("patients", version.version))


def _rows(frame: pd.DataFrame, part: str) -> pd.DataFrame:
    """The validation or test rows of the search's split (seed 0, 70/15/15), as the CSV has them."""
    train, val, test = split_indices(frame[TARGET].to_numpy(), "regression", (0.7, 0.15, 0.15), 0)
    return frame.iloc[{"val": val, "test": test}[part]]


def _rmse(model: mlflow.pyfunc.PyFuncModel, rows: pd.DataFrame) -> float:
    predictions = model.predict(rows.drop(columns=[TARGET]))["prediction"].to_numpy()
    return float(np.sqrt(np.mean((predictions - rows[TARGET].to_numpy()) ** 2)))


@pytest.mark.parametrize("executor", ["local", "batched", "ray"])
def test_a_trials_published_model_is_its_best_epochs_where_its_curve_went_up(workdir, executor, request):
    if executor == "ray":
        request.getfixturevalue("ray_session")
    frame = _patients(workdir)
    client, trial = _search(workdir, '"layers": [32], "lr": 0.1, "optimizer": "sgd", "momentum": 0.9',
                            "--executor", executor, epochs=8)
    metrics = trial.data.metrics
    curve = {m.step: m.value for m in client.get_metric_history(trial.info.run_id, "val_rmse")}
    best = int(metrics["best_epoch"])
    assert metrics["epochs_trained"] == 8 and best < 8 and curve[8] > curve[best] == min(curve.values())
    assert metrics["best_val_rmse"] == pytest.approx(curve[best])
    served = _rmse(_served(client, workdir), _rows(frame, "val"))
    assert served == pytest.approx(curve[best], rel=1e-4) and served != pytest.approx(curve[8], rel=1e-3)


@pytest.mark.parametrize("choice", [
    '"target_transform": "log1p"',
    '"numeric_encoding": "robust"',
    '"numeric_encoding": "quantile"',
    '"numeric_encoding": "piecewise_linear"',
    '"numeric_embedding": "periodic"',
])
def test_the_served_model_answers_raw_rows_as_the_search_evaluated_it(workdir, capsys, choice):
    frame = _patients(workdir)
    client, trial = _search(workdir, f'"layers": [16], "lr": 0.01, {choice}', "--executor", "local")
    name, value = (part.strip(' "') for part in choice.split(":"))
    assert trial.data.params[name] == value
    predictions = _served(client, workdir).predict(_rows(frame, "test").drop(columns=[TARGET]))["prediction"]
    assert predictions.between(frame[TARGET].min() / 2, frame[TARGET].max() * 2).all()  # in the target's units
    assert _rmse(_served(client, workdir), _rows(frame, "test")) == pytest.approx(trial.data.metrics["test_rmse"],
                                                                                   rel=1e-4)
    if name == "target_transform":
        assert "target 'progress': the network learns log1p of it" in capsys.readouterr().out
