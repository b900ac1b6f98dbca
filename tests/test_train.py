"""The shared training function on its own: no Ray, no MLflow, a report callback that collects."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from hpsearch import Search
from hpsearch.data.sources import Dataset, Split, load_dataset
from hpsearch.errors import NonFiniteLossError
from hpsearch.model.network import load_model
from hpsearch.training.fit import TrialConfig, evaluate, fit, is_complete_checkpoint


def _data(name: str) -> Dataset:
    return load_dataset(Search(data=f"sklearn:{name}"), Path("."))


def _collect(config: TrialConfig, data: Dataset, **kwargs) -> list[dict]:
    reports: list[dict] = []
    fit(config, data, lambda metrics, save: reports.append(metrics), **kwargs)
    return reports


@pytest.mark.parametrize(("name", "keys"), [
    ("breast_cancer", {"train_loss", "val_loss", "val_accuracy"}),
    ("wine", {"train_loss", "val_loss", "val_accuracy"}),
    ("diabetes", {"train_loss", "val_loss", "val_rmse", "val_mae"}),
])
def test_each_task_learns_and_reports_its_metrics_every_epoch(name: str, keys: set):
    reports = _collect(TrialConfig(hidden_sizes=(32,), lr=1e-2, max_epochs=8), _data(name))
    assert [r["epoch"] for r in reports] == list(range(1, 9))
    assert all(keys <= set(r) for r in reports)
    assert reports[-1]["val_loss"] < reports[0]["val_loss"]
    if "val_accuracy" in keys:
        assert reports[-1]["val_accuracy"] > 0.8


@pytest.mark.parametrize("optimizer", ["sgd", "adam", "adamw", "rmsprop"])
@pytest.mark.parametrize("activation", ["relu", "tanh", "sigmoid", "leaky_relu", "gelu"])
def test_every_optimizer_and_activation_trains(optimizer: str, activation: str):
    config = TrialConfig(hidden_sizes=(16, 8), optimizer=optimizer, activation=activation, dropout=0.1,
                         weight_decay=1e-4, lr=1e-3, max_epochs=1)
    assert np.isfinite(_collect(config, _data("iris"))[0]["val_loss"])


def test_same_config_and_seed_give_the_same_metrics():
    config = TrialConfig(hidden_sizes=(32, 16), dropout=0.2, max_epochs=3, seed=5)
    data = _data("breast_cancer")
    assert _collect(config, data) == _collect(config, data)


def test_a_nan_loss_raises_non_finite_loss_error():
    data = _data("iris")
    broken = Split(np.full_like(data.train.X, np.nan), data.train.y)
    poisoned = Dataset(broken, data.val, data.test, data.task, data.feature_names, data.classes)
    with pytest.raises(NonFiniteLossError, match="training loss became nan at epoch 1"):
        _collect(TrialConfig(hidden_sizes=(8,), max_epochs=2), poisoned)


def test_early_stopping_ends_a_trial_that_stops_improving():
    config = TrialConfig(hidden_sizes=(8,), lr=1e-9, optimizer="sgd", momentum=0.0, max_epochs=50,
                         early_stopping_patience=2, metric="val_accuracy", mode="max")
    reports = _collect(config, _data("iris"))
    assert len(reports) < 50 and reports[-1]["early_stopped"] == 1
    assert all("early_stopped" not in r for r in reports[:-1])


def test_resuming_from_a_checkpoint_continues_exactly_where_it_stopped(tmp_path: Path):
    data = _data("breast_cancer")
    config = TrialConfig(hidden_sizes=(16,), dropout=0.2, max_epochs=4, seed=1)
    straight = _collect(config, data)

    checkpoint = tmp_path / "ckpt"

    def stop_after_two(metrics, save):
        if metrics["epoch"] == 2:
            save(checkpoint)
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        fit(config, data, stop_after_two)
    resumed = _collect(config, data, resume_from=checkpoint)
    assert [r["epoch"] for r in resumed] == [3, 4]
    assert resumed == straight[2:]


def _last_checkpoint(config: TrialConfig, data: Dataset, directory: Path) -> list[dict]:
    """Train to the end, saving the checkpoint of the last report; returns the reports."""
    reports: list[dict] = []

    def keep(metrics, save):
        reports.append(metrics)
        save(directory)

    directory.mkdir()
    fit(config, data, keep)
    return reports


@pytest.mark.parametrize("patience", [None, 2])
def test_resuming_from_the_last_epochs_checkpoint_reports_that_epoch_again_and_trains_no_more(tmp_path, patience):
    data = _data("iris")
    lr = 1e-9 if patience else 1e-2  # a learning rate this small stops improving: early stopping ends the trial
    config = TrialConfig(hidden_sizes=(8,), lr=lr, optimizer="sgd", momentum=0.0, max_epochs=6 if patience else 3,
                         early_stopping_patience=patience, metric="val_accuracy", mode="max")
    straight = _last_checkpoint(config, data, tmp_path / "ckpt")
    again = _collect(config, data, resume_from=tmp_path / "ckpt")
    assert again == [straight[-1]]  # same epoch, same metrics (early_stopped included), nothing trained
    assert (patience is None and straight[-1]["epoch"] == 3) or straight[-1]["early_stopped"] == 1


def test_a_checkpoint_cut_short_is_not_complete(tmp_path: Path):
    data = _data("iris")
    _last_checkpoint(TrialConfig(hidden_sizes=(8,), max_epochs=1), data, tmp_path / "ckpt")
    assert is_complete_checkpoint(tmp_path / "ckpt")
    state = tmp_path / "ckpt" / "train_state.pt"
    state.write_bytes(state.read_bytes()[:-20])
    assert not is_complete_checkpoint(tmp_path / "ckpt")
    assert not is_complete_checkpoint(tmp_path / "missing")


def test_a_saved_model_reloads_and_scores_the_same(tmp_path: Path):
    data = _data("wine")
    config = TrialConfig(hidden_sizes=(16,), max_epochs=2)
    model = fit(config, data, lambda metrics, save: save(tmp_path) if metrics["epoch"] == 2 else None)
    loaded, spec = load_model(tmp_path)
    assert evaluate(loaded, data.val, spec) == pytest.approx(evaluate(model.cpu(), data.val, spec))
    assert spec.classes == [0, 1, 2] and torch.load(tmp_path / "model.pt", weights_only=True)


def test_params_round_trip_through_the_flat_mlflow_form():
    config = TrialConfig(hidden_sizes=(64, 32), lr=0.01, optimizer="sgd")
    flat = config.to_params()
    assert flat["n_layers"] == 2 and flat["units_1"] == 32 and "hidden_sizes" not in flat
    assert TrialConfig.from_params(flat) == config
    assert TrialConfig.from_params({"layers": "128-64"}).hidden_sizes == (128, 64)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (none on this machine)")
@pytest.mark.parametrize("optimizer", ["sgd", "adam", "adamw", "rmsprop"])
def test_training_runs_on_the_gpu_and_matches_the_cpu_closely(optimizer):
    data = _data("breast_cancer")
    config = TrialConfig(hidden_sizes=(32,), max_epochs=3, optimizer=optimizer)
    on_gpu = fit(config, data, lambda metrics, save: None, device="cuda")
    assert next(on_gpu.parameters()).is_cuda
    gpu = _collect(config, data, device="cuda")[-1]
    cpu = _collect(config, data)[-1]
    assert gpu["val_accuracy"] == pytest.approx(cpu["val_accuracy"], abs=0.05)


def test_the_ray_trainable_loads_neither_mlflow_nor_scikit_learn_nor_pandas():
    """Every Ray worker imports the trainable's module: the driver's libraries would cost it seconds of CPU."""
    import subprocess
    import sys

    code = ("import sys, hpsearch.execution.trainable; "
            "print(sorted(m for m in ('mlflow', 'sklearn', 'pandas', 'matplotlib', 'plotly') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
