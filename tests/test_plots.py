"""The figures' content, from small in-memory search histories (no Ray, no MLflow): the data each plot draws."""

from __future__ import annotations

import json
import random
import shutil

import numpy as np
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

from hpsearch.figures import plots
from hpsearch.figures.study import describe_space, rebuild_study, searched_distributions
from hpsearch.model.network import ModelSpec, build_model
from hpsearch.space import Search, choice, layers, loguniform, randint, uniform
from hpsearch.tracking.reader import SearchHistory
from hpsearch.tracking.schema import TrialRecord
from hpsearch.training import architecture

SPACE = Search(data="sklearn:iris", params={
    "layers": layers(1, 3, units=(16, 256)), "lr": loguniform(1e-4, 0.1), "optimizer": choice(["adam", "sgd"]),
    "batch_size": choice([32, 64]), "dropout": 0.1,  # fixed: not searched
}).describe_params()
SEARCHED = {"n_layers", "units_0", "units_1", "units_2", "lr", "optimizer", "batch_size"}


def _history(n_trials: int = 8, max_epochs: int = 4, mode: str = "min") -> SearchHistory:
    """Trials with random configs; odd ones stopped after one epoch, the last one failed before any epoch."""
    rng = random.Random(0)
    trials = []
    for i in range(n_trials):
        n_layers = rng.randint(1, 3)
        params = {"n_layers": str(n_layers), "lr": str(10 ** rng.uniform(-4, -1)), "dropout": "0.1",
                  "optimizer": rng.choice(["adam", "sgd"]), "batch_size": str(rng.choice([32, 64])),
                  **{f"units_{k}": str(rng.randint(16, 256)) for k in range(n_layers)}}
        status = "failed" if i == n_trials - 1 else "stopped" if i % 2 else "completed"
        epochs = {"failed": 0, "stopped": 1, "completed": max_epochs}[status]
        start = 1_000 * i
        curves = {key: [(e, 1.0 / (e + i) + offset) for e in range(1, epochs + 1)]
                  for key, offset in (("train_loss", 0.0), ("val_loss", 0.1))} if epochs else {}
        metrics = {key: points[-1][1] for key, points in curves.items()}
        trials.append(TrialRecord(f"t{i}", f"run{i}", f"trial_{i:03d}", params, status, epochs, metrics, curves=curves,
                                  start_ms=start, end_ms=start + 5_000))
    return SearchHistory("exp", "parent", "search-x", {**SPACE, "metric": "val_loss", "mode": mode},
                         {}, {}, trials, start_ms=0)


def test_learning_curves_have_one_series_per_scored_trial_with_one_point_per_epoch():
    history = _history()
    series = plots.learning_curve_series(history)
    scored = [t for t in history.trials if t.status != "failed"]
    assert list(series) == [t.name for t in scored]
    assert [len(points) for points in series.values()] == [t.epochs for t in scored] == [4, 1, 4, 1, 4, 1, 4]
    plot = plots.learning_curves(history)
    traces = plot.interactive.data
    assert len(traces) == len(scored)
    assert [list(trace.x) for trace in traces] == [[e for e, _ in points] for points in series.values()]
    stopped = [t for t in traces if "(stopped)" in t.name]
    assert stopped and all(t.marker.symbol[-1] == "x" for t in stopped)  # where ASHA stopped the trial
    plots.close([plot])


@pytest.mark.parametrize("mode", ["min", "max"])
def test_best_so_far_never_gets_worse_and_ends_at_the_best_trial(mode):
    history = _history(mode=mode)
    plot = plots.best_so_far(history)
    running = np.array(plot.interactive.data[1].y)
    steps = np.diff(running)
    assert (steps <= 0).all() if mode == "min" else (steps >= 0).all()
    assert running[-1] == history.ranked()[0].last("val_loss")
    assert len(running) == len(history.scored())
    plots.close([plot])


def test_the_rebuilt_study_holds_every_scored_trial_with_its_last_value():
    history = _history()
    study = rebuild_study(history)
    assert len(study.trials) == 7  # the failed trial is left out
    assert [t.value for t in study.trials] == [t.last("val_loss") for t in history.scored()]
    deep = next(t for t in study.trials if t.params["n_layers"] == 1)
    assert deep.params["units_1"] == 0 and deep.params["units_2"] == 0  # absent layers count as 0 units


def test_a_scored_trial_without_params_is_left_out_of_the_rebuilt_study():
    history = _history()
    history.trials[0].params.clear()  # what a kill between a run's creation and its params left
    study = rebuild_study(history)
    assert [t.user_attrs["trial"] for t in study.trials] == [t.name for t in history.scored()[1:]]


def test_importance_covers_every_searched_hyperparameter_and_only_those():
    history = _history(n_trials=12)
    study = rebuild_study(history)
    plot, importances = plots.param_importances(study, "val_loss")
    assert set(importances) == SEARCHED
    assert sum(importances.values()) == pytest.approx(1.0)
    assert set(plot.interactive.data[0].y) == SEARCHED
    parallel = plots.parallel_coordinates(study, "val_loss")
    axes = parallel.interactive.layout.xaxis.ticktext  # Optuna 5 draws one vertical axis per tick
    assert set(axes) == SEARCHED | {"val_loss"}
    assert sum(t.customdata is not None for t in parallel.interactive.data) == len(study.trials)  # a line each
    plots.close([plot, parallel])


def test_the_space_is_recorded_as_optuna_distributions_and_read_back_as_them():
    search = Search(data="sklearn:iris", params={
        "dropout": uniform(0.0, 0.5), "lr": loguniform(1e-05, 0.1), "batch_size": randint(1, 4),
        "activation": choice(["relu", "tanh"]), "layers": layers(choices=[[32], [64, 32]]), "momentum": 0.5})
    recorded = search.describe_params()
    assert json.loads(recorded["space.lr"])["name"] == "FloatDistribution" and recorded["space.momentum"] == "0.5"
    space = {k.removeprefix("space."): v for k, v in recorded.items()}
    assert searched_distributions(space) == {
        "dropout": FloatDistribution(0.0, 0.5), "lr": FloatDistribution(1e-05, 0.1, log=True),
        "batch_size": IntDistribution(1, 4), "activation": CategoricalDistribution(["relu", "tanh"]),
        "layers": CategoricalDistribution(["32", "64-32"]),
    }
    assert describe_space(space)["lr"] == "loguniform(1e-05, 0.1)"
    assert describe_space(space)["layers"] == "layers(choices=[[32], [64, 32]])"  # as the space file wrote it


def test_layer_widths_a_shallower_trial_lacks_may_be_zero_in_the_rebuilt_space():
    space = {k.removeprefix("space."): v for k, v in SPACE.items()}
    found = searched_distributions(space)
    assert found["n_layers"] == IntDistribution(1, 3) and found["units_0"] == IntDistribution(16, 256, log=True)
    assert found["units_1"] == IntDistribution(0, 256) and found["units_2"] == IntDistribution(0, 256)


def test_the_best_trials_loss_plot_shows_training_and_validation_loss():
    trial = _history().trials[0]
    plot = plots.best_trial_losses(trial)
    assert [t.name for t in plot.interactive.data] == ["train_loss", "val_loss"]
    assert [len(t.y) for t in plot.interactive.data] == [4, 4]
    plots.close([plot])


def test_confusion_matrix_counts_every_test_row_once():
    y_true = np.array([0, 0, 1, 2, 2, 2])
    y_pred = np.array([0, 1, 1, 2, 2, 0])
    plot = plots.confusion_matrix(y_true, y_pred, ["a", "b", "c"])
    matrix = np.array(plot.interactive.data[0].z)
    assert matrix.tolist() == [[1, 1, 0], [0, 1, 0], [1, 0, 2]]
    assert "accuracy 0.667" in plot.interactive.layout.title.text
    plots.close([plot])


def test_predicted_vs_true_plots_every_row():
    y = np.linspace(0, 10, 20)
    plot = plots.predicted_vs_true(y, y + 1, "score")
    assert len(plot.interactive.data[0].x) == 20 and "RMSE 1" in plot.interactive.layout.title.text
    plots.close([plot])


def test_each_trial_gets_a_small_loss_png(tmp_path):
    path = tmp_path / "loss.png"
    plots.trial_loss_png(_history().trials[0], str(path))
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_architecture_summary_lists_layers_shapes_and_parameter_counts():
    spec = ModelSpec(n_features=64, n_outputs=10, hidden_sizes=(32, 16), dropout=0.2)
    model = build_model(spec)
    rows = architecture.layer_table(model, 64)
    assert [shape for *_, shape, _ in rows] == [(1, 32), (1, 32), (1, 32), (1, 16), (1, 16), (1, 16), (1, 10)]
    text = architecture.summary(model, spec)
    total = 64 * 32 + 32 + 32 * 16 + 16 + 16 * 10 + 10
    assert f"total parameters: {total:,}" in text and "Linear(in_features=64, out_features=32" in text
    dot = architecture.to_dot(model, spec)
    assert dot.count("->") == 7 and "[1, 10]" in dot


@pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz `dot` is not installed (apt-get install graphviz)")
def test_the_architecture_graph_renders_where_graphviz_is_installed(tmp_path):
    spec = ModelSpec(n_features=4, n_outputs=1, hidden_sizes=(8,), task="regression")
    assert architecture.graph_png(architecture.to_dot(build_model(spec), spec), tmp_path / "g.png")
    assert (tmp_path / "g.png").read_bytes()[:4] == b"\x89PNG"
