"""The batched executor (``--executor batched``): populations of trials, each trial still its own tracked trial."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
import yaml
from mlflow import MlflowClient
from sklearn.datasets import load_iris

from hpsearch.cli.main import main
from hpsearch.execution.batched import POPULATION_SIZE, population_sizes
from hpsearch.model.network import load_model
from hpsearch.results.predict import load_pyfunc
from tests.conftest import SPACES, write_space


@pytest.fixture
def no_ray(monkeypatch: pytest.MonkeyPatch) -> None:
    """As in a fresh process: a Ray another test started would put the populations on Ray."""
    monkeypatch.delitem(sys.modules, "ray", raising=False)


def _client(workdir: Path) -> MlflowClient:
    return MlflowClient(f"sqlite:///{workdir / 'mlruns' / 'mlflow.db'}")


def _children(client: MlflowClient, experiment: str) -> list:
    exp = client.get_experiment_by_name(experiment)
    runs = client.search_runs([exp.experiment_id], max_results=1000)
    return sorted((r for r in runs if "mlflow.parentRunId" in r.data.tags), key=lambda r: r.info.run_name)


def _parent(client: MlflowClient, experiment: str):
    exp = client.get_experiment_by_name(experiment)
    return client.search_runs([exp.experiment_id], "tags.`hpsearch.kind` = 'search'")[0]


def _histories(client: MlflowClient, run) -> dict[str, list[tuple[int, float]]]:
    """Every metric's history, but the best model's publishing time (a duration, never the same)."""
    return {key: [(m.step, m.value) for m in client.get_metric_history(run.info.run_id, key)]
            for key in sorted(run.data.metrics) if key != "model_log_seconds"}


def test_a_batched_search_gives_every_trial_its_own_run_with_params_metrics_status_model_and_curve(
        workdir: Path, capsys, no_ray):
    args = ["run", str(SPACES / "reference.py"), "--num-samples", "6", "--max-epochs", "3", "--executor", "batched"]
    assert main(args) == 0
    assert "batched in populations, in-process" in capsys.readouterr().out
    client = _client(workdir)
    parent = _parent(client, "reference")
    assert parent.info.status == "FINISHED" and parent.data.params["executor"] == "batched"
    children = _children(client, "reference")
    assert len(children) == 6
    statuses = []
    for child in children:
        status = child.data.tags["hpsearch.status"]
        statuses.append(status)
        assert child.info.status == "FINISHED"
        assert {"lr", "n_layers", "units_0", "batch_size", "optimizer", "seed", "max_epochs"} <= set(child.data.params)
        epochs = int(child.data.metrics["epochs_trained"])
        assert (status == "completed") == (epochs == 3)
        if status == "stopped":
            assert child.data.tags["hpsearch.stop_reason"] == "scheduler"
        for key in ("train_loss", "val_loss", "val_accuracy"):
            assert [m.step for m in client.get_metric_history(child.info.run_id, key)] == list(range(1, epochs + 1))
        _, spec = load_model(client.download_artifacts(child.info.run_id, "model", str(workdir / child.info.run_id)))
        assert spec.hidden_sizes == tuple(int(child.data.params[f"units_{i}"])
                                          for i in range(int(child.data.params["n_layers"])))
    # successive halving stopped some members of the population at the first rung, and let others go on
    assert "stopped" in statuses and "completed" in statuses


def test_early_stopping_stops_members_one_by_one_at_their_own_epoch(workdir: Path, no_ray):
    space = write_space(workdir, "search = Search(data='sklearn:iris', params={'lr': loguniform(0.05, 1.0), "
                                 "'optimizer': 'sgd', 'layers': [8]}, scheduler='fifo', early_stopping_patience=1, "
                                 "num_samples=6, max_epochs=12, executor='batched')")
    assert main(["run", str(space), "--no-plots"]) == 0
    children = _children(_client(workdir), "space")
    stopped = [c for c in children if c.data.tags["hpsearch.status"] == "stopped"]
    assert stopped and all(c.data.tags["hpsearch.stop_reason"] == "early_stopping" for c in stopped)
    epochs = {int(c.data.metrics["epochs_trained"]) for c in children}
    assert len(epochs) > 1  # members of one population ended at different epochs


def test_a_member_whose_loss_turns_nan_fails_alone(workdir: Path, capsys, no_ray):
    space = write_space(workdir, "search = Search(data='sklearn:iris', searcher='grid', "
                                 "params={'lr': choice([0.01, 1e30]), 'optimizer': 'sgd', 'layers': [8]}, "
                                 "max_epochs=3, executor='batched')")
    assert main(["run", str(space), "--no-plots"]) == 0
    assert "training loss became" in capsys.readouterr().out
    children = _children(_client(workdir), "space")
    by_lr = {float(c.data.params["lr"]): c for c in children}
    assert set(by_lr) == {0.01, 1e30}
    failed, fine = by_lr[1e30], by_lr[0.01]
    assert failed.info.status == "FAILED" and failed.data.tags["hpsearch.status"] == "failed"
    assert "training loss became" in failed.data.tags["hpsearch.error"]
    assert fine.info.status == "FINISHED" and fine.data.tags["hpsearch.status"] == "completed"
    assert fine.data.metrics["epochs_trained"] == 3


def test_the_same_space_and_seed_give_the_same_trials_and_metrics_run_after_run(workdir: Path, no_ray):
    space = write_space(workdir, "search = Search(data='sklearn:iris', params={'lr': loguniform(1e-3, 1e-1), "
                                 "'layers': layers(1, 2, units=(4, 32)), 'dropout': uniform(0.0, 0.3), "
                                 "'batch_size': choice([16, 32])}, early_stopping_patience=2, "
                                 "num_samples=20, max_epochs=4, seed=3, executor='batched')")
    for experiment in ("first", "second"):
        assert main(["run", str(space), "--experiment", experiment, "--no-plots", "-q"]) == 0
    client = _client(workdir)
    first, second = _children(client, "first"), _children(client, "second")
    assert len(first) == len(second) == 20
    assert len({c.data.params["lr"] for c in first}) == 20  # two populations of 10, every trial its own config
    for a, b in zip(first, second, strict=True):
        assert a.info.run_name == b.info.run_name and a.data.params == b.data.params
        assert a.data.tags["hpsearch.status"] == b.data.tags["hpsearch.status"]
        assert _histories(client, a) == _histories(client, b)


def test_the_best_batched_trial_exports_retrains_and_predicts(workdir: Path, no_ray):
    space = write_space(workdir, "search = Search(data='sklearn:iris', params={'lr': loguniform(1e-3, 1e-1)}, "
                                 "num_samples=4, max_epochs=2, executor='batched')")
    assert main(["run", str(space), "--no-plots"]) == 0
    assert main(["best", "space"]) == 0
    assert main(["export", "space", "-o", "best.yaml"]) == 0
    document = yaml.safe_load((workdir / "best.yaml").read_text())
    best_run = _parent(_client(workdir), "space").data.tags["hpsearch.best_run_id"]
    assert document["provenance"]["trial_run_id"] == best_run
    assert main(["train", "best.yaml", "--epochs", "1"]) == 0
    model = load_pyfunc("models:/space@best", f"sqlite:///{workdir / 'mlruns' / 'mlflow.db'}")
    rows = load_iris(as_frame=True).frame.drop(columns="target").head(5)
    assert list(model.predict(rows)["prediction"]) == [0, 0, 0, 0, 0] or len(model.predict(rows)) == 5


def test_auto_chooses_batched_for_small_networks_and_says_why(workdir: Path, capsys, no_ray):
    space = write_space(workdir, "search = Search(data='sklearn:iris', num_samples=2, max_epochs=1, executor='auto')")
    assert main(["run", str(space), "--no-plots"]) == 0
    out = capsys.readouterr().out
    assert "executor auto: batched (hidden layers at most 256 units" in out
    assert _parent(_client(workdir), "space").data.params["executor"] == "batched"


def test_auto_keeps_its_former_choice_for_wide_networks(workdir: Path, capsys, no_ray):
    space = write_space(workdir, "search = Search(data='sklearn:iris', params={'layers': [1024]}, num_samples=1, "
                                 "max_epochs=1, executor='auto')")
    assert main(["run", str(space), "--no-plots"]) == 0
    assert "executor auto: local (not batched: hidden layers up to 1024 units > 256)" in capsys.readouterr().out


def test_a_search_is_cut_into_populations_of_equal_size():
    assert population_sizes(24) == [12, 12]
    assert population_sizes(POPULATION_SIZE) == [POPULATION_SIZE]
    assert population_sizes(5, slots=2) == [3, 2]
    assert population_sizes(1, slots=4) == [1]
    assert sum(population_sizes(200, slots=2)) == 200 and max(population_sizes(200, slots=2)) <= POPULATION_SIZE


def test_populations_on_ray_are_actors_whose_trials_are_tracked_and_deterministic(workdir: Path, capsys,
                                                                                  ray_session):
    space = write_space(workdir, "search = Search(data='sklearn:iris', params={'lr': loguniform(1e-3, 1e-1), "
                                 "'layers': layers(1, 2, units=(4, 16))}, num_samples=6, max_epochs=3, "
                                 "executor='batched')")
    for experiment in ("ray1", "ray2"):
        assert main(["run", str(space), "--experiment", experiment, "--no-plots"]) == 0
        assert "batched in populations on Ray" in capsys.readouterr().out
    client = _client(workdir)
    first, second = _children(client, "ray1"), _children(client, "ray2")
    assert len(first) == 6 and {c.data.tags["hpsearch.status"] for c in first} <= {"completed", "stopped"}
    for a, b in zip(first, second, strict=True):
        assert a.data.params == b.data.params and _histories(client, a) == _histories(client, b)
        assert client.list_artifacts(a.info.run_id, "model")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_a_population_trains_on_the_gpu_when_the_trials_ask_for_one(workdir: Path, capsys):
    space = write_space(workdir, "search = Search(data='sklearn:digits', num_samples=4, max_epochs=2, "
                                 "resources={'cpu': 1, 'gpu': 1}, executor='batched')")
    assert main(["run", str(space), "--no-plots"]) == 0
    assert "batched in populations on Ray" in capsys.readouterr().out
    children = _children(_client(workdir), "space")
    assert len(children) == 4 and all(c.info.status == "FINISHED" for c in children)
