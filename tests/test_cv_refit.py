"""``cv=``: trials judged on folds of the training rows, their model the folds' average, on every executor; and
``refit=``: the published model trained again on training + validation rows."""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import numpy as np
import pytest
from mlflow import MlflowClient

from hpsearch.cli.main import main
from hpsearch.data.sources import load_dataset
from hpsearch.space import load_space
from hpsearch.training.fit import Trainer, TrialConfig, fit
from tests.conftest import write_space
from tests.test_ensemble import SPACE, _parent, _table


def test_a_cross_validated_trial_reports_the_mean_of_its_folds_each_epoch(tmp_path: Path):
    _table(tmp_path / "t.csv")
    space = write_space(tmp_path, "search = Search(data='csv:t.csv', target='y')\n")
    data = load_dataset(load_space(space), space).for_trials()
    config = TrialConfig(hidden_sizes=(16,), lr=0.01, max_epochs=3, cv=3)
    reported = []

    fit(config, data, lambda metrics, save: reported.append(metrics))

    folds = [Trainer(TrialConfig(hidden_sizes=(16,), lr=0.01, max_epochs=3, seed=i), fold)
             for i, fold in enumerate(data.folds(3, seed=0))]
    for metrics in reported:
        each = [trainer.train_epoch() for trainer in folds]
        assert metrics["val_loss"] == pytest.approx(np.mean([m["val_loss"] for m in each]))
        assert metrics["train_loss"] == pytest.approx(np.mean([m["train_loss"] for m in each]))
    assert sum(len(fold.val) for fold in data.folds(3, seed=0)) == len(data.train)  # every training row, once


def test_a_cross_validated_trial_resumed_from_its_checkpoint_goes_on_as_if_never_stopped(tmp_path: Path):
    _table(tmp_path / "t.csv")
    space = write_space(tmp_path, "search = Search(data='csv:t.csv', target='y')\n")
    data = load_dataset(load_space(space), space).for_trials()
    config = TrialConfig(hidden_sizes=(8,), lr=0.01, max_epochs=4, cv=2)
    straight, first, rest = [], [], []
    fit(config, data, lambda metrics, save: straight.append(metrics["val_loss"]))

    class Killed(Exception):
        pass

    def killed_after_two(metrics, save):
        first.append(metrics["val_loss"])
        if metrics["epoch"] == 2:
            save(tmp_path / "checkpoint")
            raise Killed

    with pytest.raises(Killed):
        fit(config, data, killed_after_two)
    model = fit(config, data, lambda metrics, save: rest.append(metrics["val_loss"]),
                resume_from=tmp_path / "checkpoint")

    assert first + rest == pytest.approx(straight, rel=1e-5)
    assert len(model.members) == 2  # the folds' average


@pytest.mark.parametrize("executor", ["local", "batched", "ray"])
def test_cv_trains_the_same_trial_on_every_executor_and_its_model_serves_the_folds_average(
        workdir: Path, request, monkeypatch, executor: str):
    if executor == "ray":
        request.getfixturevalue("ray_session")
    frame = _table(workdir / "t.csv")
    space = write_space(workdir, "search = Search(data='csv:t.csv', target='y', params={'layers': [16], 'lr': 0.01}, "
                                 "num_samples=1, max_epochs=3, cv=3, refit=False, experiment='cv')\n")
    uri = f"sqlite:///{workdir / 'mlruns.db'}"

    assert main(["run", str(space), "--executor", executor, "--no-plots", "-q", "--tracking-uri", uri]) == 0

    client, parent = _parent(uri, "cv")
    assert parent.data.params["cv"] == "3"
    [trial] = client.search_runs([parent.info.experiment_id], f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'")
    curve = [m.value for m in sorted(client.get_metric_history(trial.info.run_id, "val_loss"), key=lambda m: m.step)]
    data = load_dataset(load_space(space), space)
    alone = []  # the same trial, trained by the training function alone
    fit(TrialConfig(hidden_sizes=(16,), lr=0.01, max_epochs=3, cv=3), data.for_trials(),
        lambda metrics, save: alone.append(metrics["val_loss"]))
    assert curve == pytest.approx(alone, rel=1e-4)
    test_rows = data.rows.test
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    served = mlflow.pyfunc.load_model("models:/cv@best").predict(frame.drop(columns="y"))
    error = served["prediction"].to_numpy()[test_rows] - frame["y"].to_numpy()[test_rows]
    assert np.sqrt(np.mean(error**2)) == pytest.approx(parent.data.metrics["best_test_rmse"], rel=1e-4)


def test_refit_publishes_the_ensemble_trained_again_on_training_and_validation_rows(workdir: Path, capsys,
                                                                                      monkeypatch):
    frame = _table(workdir / "t.csv")
    space = write_space(workdir, f"search = Search(data='csv:t.csv', target='y', params={SPACE}, num_samples=6, "
                                 "max_epochs=6, scheduler='fifo', cv=False, refit=True, experiment='refit')\n")
    uri = f"sqlite:///{workdir / 'mlruns.db'}"

    assert main(["run", str(space), "--executor", "local", "--no-plots", "-q", "--tracking-uri", uri]) == 0

    out = capsys.readouterr().out
    assert "refit on train + validation" in out
    client, parent = _parent(uri, "refit")
    metrics = parent.data.metrics
    assert parent.data.params["refit"] == "True" and parent.data.tags["hpsearch.published"].endswith("_refit")
    assert metrics["refit_size"] == metrics["ensemble_size"] >= 2
    refit = json.loads(Path(client.download_artifacts(parent.info.run_id, "refit.json", str(workdir))).read_text())
    trials = {run.info.run_id: run for run in client.search_runs(
        [parent.info.experiment_id], f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'")}
    for member in refit["members"]:  # each trained for its trial's best epoch count
        assert member["epochs"] == trials[member["run_id"]].data.metrics["best_epoch"]
    assert client.get_model_version_by_alias("refit", "best").run_id == parent.info.run_id
    test_rows = load_dataset(load_space(space), space).rows.test
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    served = mlflow.pyfunc.load_model("models:/refit@best").predict(frame.drop(columns="y"))
    error = served["prediction"].to_numpy()[test_rows] - frame["y"].to_numpy()[test_rows]
    assert np.sqrt(np.mean(error**2)) == pytest.approx(metrics["refit_test_rmse"], rel=1e-4)
    assert metrics["refit_test_rmse"] != pytest.approx(metrics["ensemble_test_rmse"], rel=1e-3)


def test_cv_and_refit_left_out_are_off_and_recorded(workdir: Path):
    _table(workdir / "t.csv", rows=120)
    space = write_space(workdir, "search = Search(data='csv:t.csv', target='y', params={'layers': [8]}, "
                                 "num_samples=1, max_epochs=1, experiment='small')\n")
    uri = f"sqlite:///{workdir / 'mlruns.db'}"

    assert main(["run", str(space), "--executor", "local", "--no-plots", "-q", "--tracking-uri", uri]) == 0

    client, parent = _parent(uri, "small")
    assert parent.data.params["cv"] == "0" and parent.data.params["refit"] == "False"
    assert not [k for k in parent.data.metrics if k.startswith("refit_")]
    [trial] = client.search_runs([parent.info.experiment_id], f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'")
    assert trial.data.params["cv"] == "0"


def test_a_trials_params_keep_cv_as_a_setting_so_export_retrains_it(workdir: Path):
    _table(workdir / "t.csv")
    space = write_space(workdir, "search = Search(data='csv:t.csv', target='y', params={'layers': [8]}, "
                                 "num_samples=1, max_epochs=1, cv=2, refit=False, experiment='exp')\n")
    uri = f"sqlite:///{workdir / 'mlruns.db'}"
    assert main(["run", str(space), "--executor", "local", "--no-plots", "-q", "--tracking-uri", uri]) == 0

    assert main(["export", "exp", "-o", str(workdir / "best.yaml"), "--tracking-uri", uri]) == 0

    assert "cv" not in (workdir / "best.yaml").read_text().split("settings:")[0]  # not a hyperparameter
    assert MlflowClient(uri).get_experiment_by_name("exp") is not None
