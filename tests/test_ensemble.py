"""The model a search publishes: an ensemble of its trials chosen on the validation rows, served from raw rows, and
the default tree it is compared with, in the run's output, in MLflow, in ``best`` and in the report."""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow import MlflowClient

from hpsearch.cli.main import main
from hpsearch.data.sources import load_dataset
from hpsearch.results.ensemble import greedy_selection
from hpsearch.space import load_space
from tests.conftest import write_space

SPACE = ("{'layers': choice([[16], [32, 16], [8]]), 'lr': loguniform(3e-2, 1e-1), "
         "'batch_size': choice([8, 16])}")


def _table(path: Path, rows: int = 240, seed: int = 0) -> pd.DataFrame:
    """A regression with a text column, a missing value and an id column, as a user's CSV has them."""
    rng = np.random.default_rng(seed)
    x1, x2 = rng.normal(size=rows), rng.uniform(-2, 2, size=rows)
    colour = rng.choice(["red", "green", "blue"], size=rows)
    y = 3 * np.sin(x1) + x2**2 + np.where(colour == "red", 2.0, 0.0) + rng.normal(scale=0.3, size=rows)
    frame = pd.DataFrame({"id": np.arange(rows), "x1": x1, "x2": x2, "colour": colour, "y": y})
    frame.loc[3, "x1"] = np.nan
    frame.to_csv(path, index=False)
    return frame


def _parent(uri: str, experiment: str) -> tuple[MlflowClient, object]:
    client = MlflowClient(uri, uri)
    found = client.get_experiment_by_name(experiment)
    [parent] = client.search_runs([found.experiment_id], "tags.`hpsearch.kind` = 'search'")
    return client, parent


@pytest.mark.parametrize("executor", ["local", "batched"])
def test_the_published_model_is_the_ensemble_and_serves_its_recorded_test_figures_from_raw_rows(
        workdir: Path, capsys, monkeypatch, executor: str):
    frame = _table(workdir / "t.csv")
    space = write_space(workdir, f"search = Search(data='csv:t.csv', target='y', params={SPACE}, num_samples=6, "
                                 f"max_epochs=6, scheduler='fifo', experiment='ens')\n")
    uri = f"sqlite:///{workdir / 'mlruns.db'}"

    assert main(["run", str(space), "--executor", executor, "--no-plots", "-q", "--tracking-uri", uri]) == 0

    out = capsys.readouterr().out
    client, parent = _parent(uri, "ens")
    metrics = parent.data.metrics
    size = int(metrics["ensemble_size"])
    assert size >= 2, out
    assert f"ensemble of {size} trials" in out and "default HistGradientBoosting" in out
    listed = json.loads(Path(client.download_artifacts(parent.info.run_id, "ensemble.json", str(workdir))).read_text())
    assert len(listed["members"]) == size and sum(m["weight"] for m in listed["members"]) == pytest.approx(1.0)
    trials = {run.info.run_id for run in client.search_runs(
        [parent.info.experiment_id], f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'")}
    assert {m["run_id"] for m in listed["members"]} <= trials
    assert parent.data.params["ensemble"] == "25" and parent.data.tags["hpsearch.published"] == "ensemble"
    version = client.get_model_version_by_alias("ens", "best")
    assert version.run_id == parent.info.run_id  # the ensemble, logged into the search's run, is what is served

    test_rows = load_dataset(load_space(space), space).rows.test
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("MLFLOW_REGISTRY_URI", uri)
    served = mlflow.pyfunc.load_model("models:/ens@best").predict(pd.read_csv(workdir / "t.csv"))
    error = served["prediction"].to_numpy()[test_rows] - frame["y"].to_numpy()[test_rows]
    assert np.sqrt(np.mean(error**2)) == pytest.approx(metrics["ensemble_test_rmse"], rel=1e-4)
    best_trial = parent.data.tags["hpsearch.best_run_id"]  # its own model stays where it was, and loads alone
    alone = mlflow.pyfunc.load_model(f"runs:/{best_trial}/pyfunc_model").predict(frame.drop(columns="y"))
    alone_error = alone["prediction"].to_numpy()[test_rows] - frame["y"].to_numpy()[test_rows]
    assert np.sqrt(np.mean(alone_error**2)) == pytest.approx(metrics["best_test_rmse"], rel=1e-4)


def test_an_ensemble_of_classifiers_averages_probabilities_and_export_keeps_the_best_single_trial(
        workdir: Path, capsys, monkeypatch):
    frame = _table(workdir / "t.csv")
    noisy = frame["y"] + np.random.default_rng(5).normal(scale=1.0, size=len(frame))
    frame["grade"] = pd.qcut(noisy, 3, labels=["low", "mid", "high"]).astype(str)
    frame.drop(columns="y").to_csv(workdir / "grades.csv", index=False)
    space = write_space(workdir, f"search = Search(data='csv:grades.csv', target='grade', params={SPACE}, "
                                 "num_samples=6, max_epochs=4, scheduler='fifo', "
                                 "experiment='grades')\n")
    uri = f"sqlite:///{workdir / 'mlruns.db'}"

    assert main(["run", str(space), "--executor", "local", "--no-plots", "-q", "--tracking-uri", uri]) == 0

    client, parent = _parent(uri, "grades")
    assert parent.data.metrics["ensemble_size"] >= 2, capsys.readouterr().out
    classes = ["high", "low", "mid"]
    test_rows = load_dataset(load_space(space), space).rows.test
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("MLFLOW_REGISTRY_URI", uri)
    served = mlflow.pyfunc.load_model("models:/grades@best").predict(pd.read_csv(workdir / "grades.csv"))
    probabilities = served[[f"probability_{c}" for c in classes]].to_numpy()
    assert probabilities.sum(axis=1) == pytest.approx(1.0)
    assert (served["prediction"].to_numpy() == np.asarray(classes)[probabilities.argmax(axis=1)]).all()
    accuracy = np.mean(served["prediction"].to_numpy()[test_rows] == frame["grade"].to_numpy()[test_rows])
    assert accuracy == pytest.approx(parent.data.metrics["ensemble_test_accuracy"])

    assert main(["export", "grades", "-o", str(workdir / "best.yaml"), "--tracking-uri", uri]) == 0
    exported = (workdir / "best.yaml").read_text()
    assert f"trial: {parent.data.tags['hpsearch.best_trial']}" in exported
    assert f"runs:/{parent.data.tags['hpsearch.best_run_id']}/pyfunc_model" in exported


def test_networks_that_predict_the_same_rows_share_their_features_and_keep_their_own_predictions(
        workdir: Path, monkeypatch):
    """The trials of a search (an ensemble's members) read raw rows with one preprocessing: its features are worked
    out once for all of them, and each network's predictions are what it predicts alone."""
    from hpsearch.model.network import load_model
    from hpsearch.model.pyfunc import predict_rows

    frame = _table(workdir / "t.csv")
    space = write_space(workdir, "search = Search(data='csv:t.csv', target='y', searcher='grid', max_epochs=2, "
                                 "params={'numeric_encoding': choice(['standard', 'piecewise_linear'])}, "
                                 "baseline=False, experiment='codes')\n")
    uri = f"sqlite:///{workdir / 'mlruns.db'}"
    assert main(["run", str(space), "--executor", "local", "--no-plots", "-q", "--tracking-uri", uri]) == 0

    client, parent = _parent(uri, "codes")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("MLFLOW_REGISTRY_URI", uri)
    state = mlflow.pyfunc.load_model("models:/codes@best").unwrap_python_model().state
    networks = [load_model(client.download_artifacts(run.info.run_id, "model", str(workdir / run.info.run_id)))
                for run in client.search_runs([parent.info.experiment_id],
                                              f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'")]
    rows = frame.drop(columns="y")
    alone = [predict_rows(model, spec, state, rows) for model, spec in networks]
    memo: dict = {}
    shared = [predict_rows(model, spec, state, rows, memo) for model, spec in networks]
    assert len(networks) == 2 and len(memo) == 1 and not alone[0].equals(alone[1])
    for one, other in zip(alone, shared, strict=True):
        pd.testing.assert_frame_equal(one, other)


def test_ensemble_false_and_baseline_false_publish_the_best_trial_alone_as_before(workdir: Path, capsys):
    _table(workdir / "t.csv")
    space = write_space(workdir, f"search = Search(data='csv:t.csv', target='y', params={SPACE}, num_samples=3, "
                                 "max_epochs=2, ensemble=False, baseline=False, "
                                 "experiment='plain')\n")
    uri = f"sqlite:///{workdir / 'mlruns.db'}"

    assert main(["run", str(space), "--executor", "local", "--no-plots", "-q", "--tracking-uri", uri]) == 0

    out = capsys.readouterr().out
    assert "  ensemble" not in out and "HistGradientBoosting" not in out and "  best trial trial_" in out
    client, parent = _parent(uri, "plain")
    assert not [k for k in parent.data.metrics if k.startswith(("ensemble_", "tree_"))]
    assert parent.data.params["ensemble"] == "0" and parent.data.params["baseline"] == "False"
    assert client.get_model_version_by_alias("plain", "best").run_id == parent.data.tags["hpsearch.best_run_id"]


def test_the_default_tree_is_shown_beside_the_search_and_its_win_is_said_plainly(workdir: Path, capsys):
    rng = np.random.default_rng(1)  # a step: a tree's first split; a network trained 1 epoch at a tiny rate is far
    x = rng.uniform(size=300)
    pd.DataFrame({"x": x, "noise": rng.normal(size=300), "y": np.where(x > 0.5, 100.0, 0.0) + x}).to_csv(
        workdir / "step.csv", index=False)
    space = write_space(workdir, "search = Search(data='csv:step.csv', target='y', params={'lr': 1e-5}, "
                                 "num_samples=2, max_epochs=1, experiment='step')\n")
    uri = f"sqlite:///{workdir / 'mlruns.db'}"

    assert main(["run", str(space), "--executor", "local", "--no-plots", "-q", "--tracking-uri", uri]) == 0

    said = "the default tree wins on this table: test rmse"
    assert said in capsys.readouterr().out
    _, parent = _parent(uri, "step")
    assert parent.data.metrics["tree_test_rmse"] < 10 < parent.data.metrics["best_test_rmse"]
    assert main(["best", "step", "--tracking-uri", uri]) == 0
    shown = capsys.readouterr().out
    assert "default HistGradientBoosting" in shown and said in shown
    assert main(["best", "step", "--json", "--tracking-uri", uri]) == 0
    assert json.loads(capsys.readouterr().out)["test"]["tree"]["rmse"] == parent.data.metrics["tree_test_rmse"]
    assert main(["report", "step", "-o", str(workdir / "report.html"), "--tracking-uri", uri]) == 0
    page = (workdir / "report.html").read_text()
    assert "What the search bought" in page and "default HistGradientBoosting" in page and said in page


def test_greedy_selection_adds_members_while_the_average_improves_and_repeats_the_best():
    y = np.zeros(100)
    above, below, far = y + 1.0, y - 1.0, y + 5.0  # two errors that cancel, and a bad candidate

    def rmse(outputs: np.ndarray) -> float:
        return float(np.sqrt(np.mean((outputs - y) ** 2)))

    assert list(greedy_selection([above, below, far], rmse, 10)) == [1, 1, 0]  # cut back to the best prefix
    assert list(greedy_selection([far, above * 0.1, above], rmse, 5)) == [0, 1, 0]  # nothing beats the best alone
    uneven = greedy_selection([y + 2.0, y - 1.0], rmse, 30)  # 1/3 of +2 and 2/3 of -1 cancel
    assert list(uneven) == [1, 2]
    assert list(greedy_selection([y + 2.0, y - 1.0], rmse, 30, first=0)) == [1, 2]  # starts from the first
    assert list(greedy_selection([above * 0.5, above * 0.1], rmse, 5, first=0)) == [1, 4]  # the first may be outweighed
