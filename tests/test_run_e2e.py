"""End-to-end: ``hpsearch run`` against a real local Ray and a real MLflow store in a temporary folder."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import ray
from mlflow import MlflowClient

from hpsearch.cli.main import main
from hpsearch.model.network import load_model
from tests.conftest import REPO, SPACES, write_space

pytestmark = pytest.mark.e2e


def _store(workdir: Path) -> MlflowClient:
    return MlflowClient(f"sqlite:///{workdir / 'mlruns' / 'mlflow.db'}")


def _runs(client: MlflowClient, experiment: str) -> tuple[list, list]:
    exp = client.get_experiment_by_name(experiment)
    runs = client.search_runs([exp.experiment_id], max_results=1000)
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    return parents, children


def test_digits_search_tracks_one_parent_and_one_child_per_trial(ray_session, workdir, capsys):
    code = main(["run", str(SPACES / "digits.py"), "--num-samples", "4", "--max-epochs", "3", "--experiment", "d"])
    assert code == 0
    assert ray.is_initialized()  # the process's own Ray, which the search reused, is left running
    out = capsys.readouterr().out
    assert "best 4 trials by val_loss" in out and "see its trials in the MLflow UI: python -m hpsearch ui" in out

    client = _store(workdir)
    experiment_id = client.get_experiment_by_name("d").experiment_id
    assert f"then open http://127.0.0.1:5000/#/experiments/{experiment_id}/runs" in out
    parents, children = _runs(client, "d")
    assert len(parents) == 1 and len(children) == 4
    parent = parents[0]
    assert parent.info.status == "FINISHED"
    assert parent.data.params["num_samples"] == "4" and json.loads(parent.data.params["space.lr"]) == {
        "name": "FloatDistribution", "attributes": {"low": 0.0001, "high": 0.1, "log": True, "step": None}}
    assert "best_val_loss" in parent.data.metrics and "best_test_accuracy" in parent.data.metrics
    assert [a.path for a in client.list_artifacts(parent.info.run_id, "space")] == ["space/digits.py"]
    best_run_id = parent.data.tags["hpsearch.best_run_id"]
    columns = json.loads(Path(client.download_artifacts(parent.info.run_id, "columns.json", str(workdir))).read_text())
    dropped = sum(note.startswith("dropped pixel_") for note in columns["notes"])
    assert dropped > 0 and "dropped pixel_0_0: a single value (0.0) in the training split" in out

    for child in children:
        assert child.data.tags["mlflow.parentRunId"] == parent.info.run_id
        assert child.info.status == "FINISHED"
        status = child.data.tags["hpsearch.status"]
        assert status in ("completed", "stopped")
        params = child.data.params
        n_layers = int(params["n_layers"])
        assert {"lr", "dropout", "weight_decay", "batch_size", "optimizer", "momentum", "activation"} <= set(params)
        assert {f"units_{i}" for i in range(n_layers)} <= set(params)
        history = client.get_metric_history(child.info.run_id, "val_loss")
        epochs = int(child.data.metrics["epochs_trained"])
        assert [m.step for m in history] == list(range(1, epochs + 1))
        assert (epochs == 3) == (status == "completed")
        assert len(client.get_metric_history(child.info.run_id, "val_accuracy")) == epochs
        model_dir = client.download_artifacts(child.info.run_id, "model", str(workdir / child.info.run_id))
        model, spec = load_model(model_dir)
        assert spec.hidden_sizes == tuple(int(params[f"units_{i}"]) for i in range(n_layers))
        assert spec.n_features == 64 - dropped and spec.n_outputs == 10  # digits' blank pixels carry nothing
    best = client.get_run(best_run_id)
    assert "test_accuracy" in best.data.metrics


def test_asha_stops_weak_trials_in_a_search_designed_for_it(ray_session, workdir):
    space = write_space(workdir, """
search = Search(
    data="sklearn:breast_cancer",
    params={"layers": [16], "lr": loguniform(1e-5, 1e-1), "optimizer": "sgd"},
    num_samples=8, max_epochs=6, scheduler=asha(grace_period=1, reduction_factor=2), searcher="random",
)
""")
    assert main(["run", str(space)]) == 0
    _, children = _runs(_store(workdir), "space")
    statuses = [c.data.tags["hpsearch.status"] for c in children]
    assert len(children) == 8
    assert statuses.count("stopped") >= 1 and statuses.count("completed") >= 1
    stopped = [c for c in children if c.data.tags["hpsearch.status"] == "stopped"]
    assert all(c.data.tags["hpsearch.stop_reason"] == "scheduler" for c in stopped)
    assert all(int(c.data.metrics["epochs_trained"]) < 6 for c in stopped)


def test_a_diverging_trial_is_marked_failed_and_the_search_goes_on(ray_session, workdir, capsys):
    space = write_space(workdir, """
search = Search(
    data="sklearn:diabetes", task="regression",
    params={"layers": [32], "lr": choice([1e-3, 1e12]), "optimizer": "sgd"},
    searcher="grid", scheduler="fifo", max_epochs=3,
)
""")
    assert main(["run", str(space)]) == 0
    parents, children = _runs(_store(workdir), "space")
    by_lr = {float(c.data.params["lr"]): c for c in children}
    assert len(children) == 2
    failed = by_lr[1e12]
    assert failed.info.status == "FAILED" and failed.data.tags["hpsearch.status"] == "failed"
    assert "NonFiniteLossError" in failed.data.tags["hpsearch.error"]
    assert by_lr[1e-3].data.tags["hpsearch.status"] == "completed"
    assert parents[0].data.metrics["trials_failed"] == 1


def test_every_trial_failing_exits_non_zero(ray_session, workdir):
    space = write_space(workdir, """
search = Search(data="sklearn:diabetes", task="regression", params={"lr": 1e12, "optimizer": "sgd"},
                num_samples=2, max_epochs=2, scheduler="fifo")
""")
    assert main(["run", str(space)]) == 1
    _, children = _runs(_store(workdir), "space")
    assert [c.info.status for c in children] == ["FAILED", "FAILED"]


def test_python_dash_m_runs_a_search_and_reports_the_ui_command(workdir):
    """The README's main command, as a user types it (its own Ray, started and stopped by the command)."""
    result = subprocess.run(
        [sys.executable, "-m", "hpsearch", "run", str(SPACES / "reference.py"), "--num-samples", "2",
         "--max-epochs", "1", "--experiment", "ref"],
        capture_output=True, text=True, timeout=300, env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "search finished" in result.stdout
    _, children = _runs(_store(workdir), "ref")
    assert len(children) == 2


@pytest.mark.parametrize(("cpus_per_trial", "slots"), [(1, 2), (2, 1)])
def test_a_ray_search_trains_its_trials_in_as_many_actors_as_the_cluster_has_slots(
        ray_session, workdir, cpus_per_trial, slots):
    """Tune is told to run no more trials at once than the cluster (2 CPUs) has slots, and to reuse its actors:
    each slot starts one trial actor, which trains trial after trial. Without the limit, or without reuse, Tune
    starts an actor for each new trial and throws it away (bench: levers): 8 actors here. Tune caches a finished
    trial's actor only for a trial already waiting, so when two trials end at the same moment it may stop one actor
    and start another a moment later (``TuneController._maybe_cache_trial_actor``): a few more than the slots, far
    fewer than the trials. The actors are Ray worker processes (``ray::ImplicitFunc``), watched through /proc."""
    space = write_space(workdir, "search = Search(data='sklearn:iris', num_samples=8, max_epochs=1, "
                                 f"scheduler='fifo', executor='ray', resources={{'cpu': {cpus_per_trial}}})")
    def trial_actors() -> set[int]:
        return {pid for pid, command in _commands().items() if command.startswith("ray::ImplicitFunc")}

    earlier, actors, done = trial_actors(), set(), threading.Event()  # earlier: a previous test's, ending

    def watch() -> None:
        while not done.is_set():
            actors.update(trial_actors() - earlier)
            time.sleep(0.05)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        assert main(["run", str(space), "--no-plots"]) == 0
    finally:
        done.set()
        watcher.join()
    assert slots <= len(actors) <= 4, f"{len(actors)} trial actors for 8 trials on {slots} slot(s)"
    _, children = _runs(_store(workdir), "space")
    assert len(children) == 8


def _commands() -> dict[int, str]:
    """Every process's command line, as ``ps`` shows it."""
    commands = {}
    for name in filter(str.isdigit, os.listdir("/proc")):
        try:
            commands[int(name)] = Path(f"/proc/{name}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
    return commands
