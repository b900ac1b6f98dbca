"""The tracking store: every trial lands in MLflow, and writes the driver does not wait for are never lost."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from hpsearch.tracking import tracker as tracking
from hpsearch.tracking.store import LocalStore, experiment_id
from hpsearch.tracking.tracker import TrialTracker
from tests.conftest import REPO, SPACES
from tests.processes import living_children


@pytest.mark.parametrize("executor", ["local", "ray"])
def test_a_search_tracks_every_trial_and_ends_the_ray_it_started_before_it_returns(workdir: Path, executor: str):
    """Every trial's run is closed with its params, metrics and model; none of the Ray processes the search
    started is left when the command prints the search's end."""
    driver = subprocess.Popen(
        [sys.executable, "-m", "hpsearch", "run", str(SPACES / "reference.py"), "--num-samples", "3",
         "--max-epochs", "2", "--executor", executor, "--no-plots"],
        cwd=workdir, env={**os.environ, "PYTHONPATH": str(REPO), "PYTHONUNBUFFERED": "1"}, text=True,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    output, ray_left = [], None
    for line in driver.stdout:
        output.append(line)
        if "search finished in" in line:  # printed once run_search has returned
            ray_left = {pid: name for pid, name in living_children(driver.pid).items()
                        if name in ("gcs_server", "raylet")}
    assert driver.wait(timeout=300) == 0, "".join(output)[-3000:]
    assert ray_left == {}
    client = MlflowClient(f"sqlite:///{workdir / 'mlruns' / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("reference").experiment_id])
    trials = [r for r in runs if r.data.tags.get("hpsearch.kind") == "trial"]
    assert len(trials) == 3 and all(r.info.status == "FINISHED" for r in trials)
    assert all(r.data.params["lr"] and "val_loss" in r.data.metrics for r in trials)
    assert all(client.list_artifacts(r.info.run_id, "model") for r in trials)


def test_a_sent_write_returns_at_once_and_its_error_is_raised_by_the_next_call(tmp_path: Path):
    """Writes nobody waits for (a trial's metrics) go to MLflow's asynchronous logging; one that fails is not lost
    in MLflow's thread: the next call raises MLflow's own error, and the store goes on."""
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment = client.create_experiment("e", artifact_location=(tmp_path / "a").as_uri())
    store = LocalStore(client=client)
    missing = "fedcba9876543210fedcba9876543210"
    store.send(tracking.log_test_metrics, missing, {"test_loss": 1.0})  # no such run: fails in MLflow's thread
    with pytest.raises(MlflowException, match=missing):
        store.call(experiment_id, "e", store.uri)
    assert store.call(experiment_id, "e", store.uri) == experiment  # reported once


def test_every_metric_sent_for_a_trial_is_in_its_run_when_the_trial_ends(tmp_path: Path):
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment = client.create_experiment("e", artifact_location=(tmp_path / "a").as_uri())
    parent = client.create_run(experiment).info.run_id
    tracker = TrialTracker(LocalStore(client=client), experiment, parent, max_epochs=30)
    run_id = tracker.trial_started("t1", {"lr": 0.1}).run_id
    for epoch in range(1, 31):
        tracker.epoch_reported("t1", {"epoch": epoch, "val_loss": 1.0 / epoch, "train_loss": 2.0 / epoch})
        tracker.flush()  # each epoch sent on its own
    tracker.trial_ended("t1")
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED" and run.data.tags["hpsearch.status"] == "completed"
    assert [m.step for m in client.get_metric_history(run_id, "val_loss")] == list(range(1, 31))
    assert run.data.metrics["epochs_trained"] == 30
