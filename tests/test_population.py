"""A population trains each member as train.fit trains it alone (issue 20): same losses, same metrics, same model."""

from __future__ import annotations

import dataclasses
import functools
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from hpsearch import Search
from hpsearch.data.dataset import Dataset, Split
from hpsearch.data.sources import load_dataset
from hpsearch.errors import NonFiniteLossError
from hpsearch.model.network import load_model
from hpsearch.training.fit import TrialConfig, evaluate, fit
from hpsearch.training.population import Population, stacks_by_width

EPOCHS = 3
TASKS = {"multiclass": "digits", "regression": "diabetes", "binary": "breast_cancer"}


@functools.cache
def _data(name: str, float64: bool = False) -> Dataset:
    data = load_dataset(Search(data=f"sklearn:{name}"), Path("."))
    if not float64:
        return data

    def wide(split: Split) -> Split:
        return Split(split.X.astype(np.float64), split.y if data.task == "multiclass" else split.y.astype(np.float64))

    return dataclasses.replace(data, train=wide(data.train), val=wide(data.val), test=wide(data.test))


@pytest.fixture
def float64():
    """train.fit builds its model in torch's default dtype: float64 for both sides of the comparison."""
    before = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield torch.float64
    torch.set_default_dtype(before)


def _solo(config: TrialConfig, data: Dataset) -> list[dict[str, float]]:
    reports: list[dict[str, float]] = []
    fit(config, data, lambda metrics, save: reports.append(metrics))
    return reports


def _together(population: Population, epochs: int) -> dict[str, list[dict[str, float]]]:
    reports: dict[str, list[dict[str, float]]] = {i: [] for i in population.members}
    for _ in range(epochs):
        for member_id, metrics in population.train_epoch().items():
            reports[member_id].append(metrics)
    return reports


def _assert_same(together: list[dict[str, float]], solo: list[dict[str, float]]) -> None:
    assert [set(r) for r in together] == [set(r) for r in solo]
    assert together == [pytest.approx(r, rel=1e-6) for r in solo]


def _members(optimizer: str, activation: str = "relu") -> dict[str, TrialConfig]:
    """A narrow member (padded to the wide one's widths) and members with other lr, weight decay, momentum."""
    settings = dict(optimizer=optimizer, activation=activation, max_epochs=EPOCHS)
    return {
        "narrow": TrialConfig(hidden_sizes=(12, 6), lr=3e-3, weight_decay=1e-3, momentum=0.9, seed=1, **settings),
        "wide": TrialConfig(hidden_sizes=(32, 16), lr=1e-2, weight_decay=0.0, momentum=0.0, seed=2, **settings),
        "other": TrialConfig(hidden_sizes=(32, 8), lr=5e-4, weight_decay=1e-2, momentum=0.5, seed=3, **settings),
    }


@pytest.mark.parametrize("task", ["multiclass", "regression"])
@pytest.mark.parametrize("optimizer", ["sgd", "adam", "adamw", "rmsprop"])
def test_each_member_reports_what_it_reports_trained_alone(optimizer, task, float64):
    data = _data(TASKS[task], float64=True)
    configs = _members(optimizer)
    together = _together(Population(configs, data, dtype=float64), EPOCHS)
    for member_id, config in configs.items():
        _assert_same(together[member_id], _solo(config, data))


@pytest.mark.parametrize(("task", "choice"), [
    ("multiclass", {"lr_schedule": "cosine"}),
    ("regression", {"lr_schedule": "onecycle", "optimizer": "adamw"}),
    ("binary", {"lr_schedule": "onecycle", "optimizer": "sgd"}),
    ("regression", {"lr_schedule": "cosine", "optimizer": "rmsprop"}),
    ("multiclass", {"label_smoothing": 0.1}),
    ("binary", {"label_smoothing": 0.2}),
    ("regression", {"adam_beta2": 0.95}),
    ("regression", {"numeric_encoding": "robust"}),
    ("multiclass", {"numeric_encoding": "quantile"}),
    ("binary", {"numeric_encoding": "piecewise_linear"}),
    ("regression", {"target_transform": "log1p"}),
    ("regression", {"numeric_embedding": "periodic"}),
], ids=lambda value: value if isinstance(value, str) else ",".join(f"{k}={v}" for k, v in value.items()))
def test_members_with_each_training_choice_report_what_they_report_trained_alone(task, choice, float64):
    """Schedules, label smoothing, Adam's beta2, input encodings and target transforms in the stack; periodic
    embeddings, which no stack has, train alone beside it. The narrow member keeps the defaults."""
    data = _data(TASKS[task], float64=True)
    if choice.get("target_transform") == "log1p":  # a positive target: diabetes' progress is
        assert data.train.y.min() * data.target_std + data.target_mean > 0
    configs = {i: dataclasses.replace(c, **choice) if i != "narrow" else c
               for i, c in _members(choice.get("optimizer", "adam")).items()}
    together = _together(Population(configs, data, dtype=float64), EPOCHS)
    for member_id, config in configs.items():
        _assert_same(together[member_id], _solo(config, data))


def test_a_members_model_is_its_best_epochs_as_in_fit(float64):
    """A learning rate this large makes the validation loss go up and down: the model is the best epoch's."""
    data = _data(TASKS["regression"], float64=True)
    config = TrialConfig(hidden_sizes=(32,), lr=0.3, optimizer="sgd", momentum=0.9, seed=3, max_epochs=6)
    population = Population({"m": config}, data, dtype=float64)
    reports = _together(population, 6)["m"]
    best = min(reports, key=lambda r: r["val_loss"])
    assert reports[-1]["best_epoch"] == best["epoch"] < 6
    model, spec = population.model("m")
    assert evaluate(model, data.val, spec, prefix="val_")["val_loss"] == pytest.approx(best["val_loss"], rel=1e-6)
    alone = fit(config, data, lambda metrics, save: None)
    assert evaluate(alone, data.val, spec, prefix="val_")["val_loss"] == pytest.approx(best["val_loss"], rel=1e-6)


@pytest.mark.parametrize("activation", ["tanh", "sigmoid", "leaky_relu", "gelu"])
def test_padded_members_match_their_solo_runs_with_every_activation(activation, float64):
    """Sigmoid is the case where a padded unit outputs act(0) != 0: it must still add nothing."""
    data = _data(TASKS["binary"], float64=True)
    configs = _members("adam", activation)
    together = _together(Population(configs, data, dtype=float64), EPOCHS)
    for member_id, config in configs.items():
        _assert_same(together[member_id], _solo(config, data))


def test_members_of_far_apart_widths_train_in_stacks_of_their_own_and_still_match_their_solo_runs(float64):
    """Padding a 4-unit member to 256 units would cost what a 256-unit member costs: it gets a stack of its own."""
    data = _data(TASKS["multiclass"], float64=True)
    settings = dict(optimizer="adam", max_epochs=2)
    configs = {"tiny": TrialConfig(hidden_sizes=(4, 4), lr=1e-2, seed=1, **settings),
               "small": TrialConfig(hidden_sizes=(6, 4), lr=3e-3, seed=2, **settings),
               "huge": TrialConfig(hidden_sizes=(256, 256), lr=1e-3, seed=3, **settings)}
    assert [set(stack) for stack in stacks_by_width(configs, data)] == [{"tiny", "small"}, {"huge"}]
    together = _together(Population(configs, data, dtype=float64), 2)
    for member_id, config in configs.items():
        _assert_same(together[member_id], _solo(config, data))


def test_stacks_trained_on_two_threads_report_exactly_what_one_thread_reports():
    """Groups (here: four optimizers, two depths) train at once on threads; nothing they share can differ."""
    data = _data("digits")
    configs = {f"{optimizer}{depth}": TrialConfig(hidden_sizes=(24,) * depth, optimizer=optimizer, dropout=0.2,
                                                  seed=depth, max_epochs=2)
               for optimizer in ("sgd", "adam", "adamw", "rmsprop") for depth in (1, 2)}
    one = _together(Population(configs, data), 2)
    two = _together(Population(configs, data, threads=2), 2)
    assert two == one and len(one) == 8


def test_a_member_whose_loss_turns_nan_fails_alone_and_the_others_go_on(float64):
    data = _data(TASKS["regression"], float64=True)  # a squared error overflows where a cross-entropy would not
    configs = {**_members("sgd"), "exploding": TrialConfig(hidden_sizes=(32, 16), lr=1e10, optimizer="sgd", seed=4)}
    with pytest.raises(NonFiniteLossError) as alone:
        _solo(configs["exploding"], data)
    population = Population(configs, data, dtype=float64)
    together = _together(population, EPOCHS)
    assert population.failed == {"exploding": str(alone.value)}
    assert "exploding" not in population.members and together["exploding"] == []
    for member_id in ("narrow", "wide", "other"):
        _assert_same(together[member_id], _solo(configs[member_id], data))


def test_removed_members_leave_and_the_others_still_match_their_solo_runs(float64):
    data = _data(TASKS["regression"], float64=True)
    configs = _members("adam")
    population = Population(configs, data, dtype=float64)
    first = population.train_epoch()
    population.remove(["wide"])
    later = _together(population, EPOCHS - 1)
    assert population.members == ["narrow", "other"] and "wide" not in later
    for member_id in ("narrow", "other"):
        _assert_same([first[member_id], *later[member_id]], _solo(configs[member_id], data))
    stopped = dataclasses.replace(configs["wide"], max_epochs=1)
    model, spec = population.model("wide")  # its weights when it left, after one epoch
    assert evaluate(model, data.val, spec, prefix="val_") == pytest.approx(
        {k: v for k, v in _solo(stopped, data)[0].items() if k.startswith("val_")}, rel=1e-6)


def _epoch_seconds(population: Population) -> float:
    start = time.process_time()
    population.train_epoch()
    return time.process_time() - start


def test_removing_members_shrinks_the_work_of_later_epochs():
    data = _data(TASKS["multiclass"])
    configs = {f"m{i}": TrialConfig(hidden_sizes=(128, 128), seed=i) for i in range(32)}
    population = Population(configs, data)
    full = min(_epoch_seconds(population) for _ in range(2))
    population.remove([f"m{i}" for i in range(2, 32)])
    shrunk = min(_epoch_seconds(population) for _ in range(2))
    assert population.members == ["m0", "m1"]
    assert shrunk < 0.5 * full  # 2 of 32 members left: about a tenth of the work, with room for a loaded machine


def test_a_saved_member_loads_as_a_trials_model_and_predicts_as_the_member(tmp_path: Path):
    data = _data(TASKS["multiclass"])
    configs = _members("adam")
    population = Population(configs, data)
    last = _together(population, 2)
    solo = fit(dataclasses.replace(configs["narrow"], max_epochs=2), data, lambda metrics, save: None)
    population.save("narrow", tmp_path / "narrow")
    loaded, spec = load_model(tmp_path / "narrow")
    assert spec.hidden_sizes == (12, 6) and spec.task == "multiclass"
    assert evaluate(loaded, data.val, spec, prefix="val_") == pytest.approx(
        {k: v for k, v in last["narrow"][-1].items() if k.startswith("val_")}, rel=1e-5)
    X = torch.as_tensor(data.val.X)
    with torch.no_grad():
        assert torch.allclose(loaded(X), solo.eval()(X), atol=1e-4)
        assert torch.equal(loaded(X), population.model("narrow")[0](X))


def test_the_same_population_gives_the_same_metrics_run_after_run():
    data = _data(TASKS["binary"])
    configs = {"a": TrialConfig(hidden_sizes=(16,), dropout=0.3, seed=1),
               "b": TrialConfig(hidden_sizes=(8,), dropout=0.0, seed=2)}
    first, second = (_together(Population(configs, data), 2) for _ in range(2))
    assert first == second
    without_dropout = _together(Population({"a": dataclasses.replace(configs["a"], dropout=0.0)}, data), 2)
    assert first["a"] != without_dropout["a"]  # dropout is applied


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (none on this machine)")
@pytest.mark.parametrize("optimizer", ["sgd", "adam", "adamw", "rmsprop"])
def test_a_population_trains_on_the_gpu_and_matches_the_cpu_closely(optimizer):
    data = _data(TASKS["multiclass"])
    configs = _members(optimizer)
    on_gpu = Population(configs, data, device="cuda")
    gpu, cpu = _together(on_gpu, EPOCHS), _together(Population(configs, data), EPOCHS)
    for member_id in configs:
        assert gpu[member_id][-1]["val_loss"] == pytest.approx(cpu[member_id][-1]["val_loss"], rel=1e-3)
    model, _ = on_gpu.model("narrow")
    assert next(model.parameters()).device.type == "cpu"
