"""What one trial's MLflow run costs: MLflow's own minimum, hpsearch's tracker, and the hand-tracked script's way.

    PYTHONPATH=. python bench/run_cost.py [--runs 200] [--repeats 3]     # in an empty folder: it creates ./mlruns

Each arm writes the same trial (5 epochs of train_loss, val_loss, val_accuracy; 8 params; the model's
``model.pt``, and for hpsearch its ``model.json``) to a local SQLite store (``hpsearch.tracking.connection``'s,
WAL mode), in this process, one run after another:

- ``mlflow minimum``: ``create_run`` (the parent and name tags), one ``log_batch`` (metrics, params, the
  status tag), ``log_artifact`` (the model), ``set_terminated``: the fewest calls that hold a trial's data;
- ``hpsearch tracker``: :class:`~hpsearch.tracking.tracker.TrialTracker` through a store in this process
  (``trial_started``, ``epoch_reported`` per epoch, ``trial_ended``), as every executor tracks a trial;
- ``hand-tracked script``: what ``../shared/reference/optuna_many_mlflow.py`` does per trial (a nested
  ``mlflow.start_run``, a ``log_batch`` per epoch, ``log_params``, ``log_artifact``, the run's end).

The arms run in interleaved blocks; prints one JSON line: per arm, the median over the blocks of the CPU and wall
milliseconds per run, and the MLflow client calls per run.
"""

from __future__ import annotations

import argparse
import collections
import json
import statistics
import time
from pathlib import Path

import mlflow
import torch
from mlflow.entities import Metric, Param, RunTag

from hpsearch.tracking.connection import connect, experiment_id
from hpsearch.tracking.store import LocalStore
from hpsearch.tracking.tracker import TrialTracker

PARAMS = {"n_layers": "2", "units_0": "32", "units_1": "16", "lr": "0.01", "dropout": "0.1", "batch_size": "64",
          "optimizer": "adam", "seed": "0"}
EPOCHS = 5
CALLS = ("create_run", "log_batch", "log_artifact", "log_artifacts", "set_terminated", "set_tag", "log_metric",
         "log_param", "update_run", "log_text", "get_run")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=200, help="runs per arm and block (default 200)")
    parser.add_argument("--repeats", type=int, default=3, help="blocks per arm (default 3)")
    cfg = parser.parse_args()
    store = LocalStore(None)
    uri = store.connect()
    client, _ = connect(uri)
    counted = collections.Counter()
    for name in CALLS:  # count the client's calls (the store's client and the fluent API's own)
        real = getattr(mlflow.MlflowClient, name)
        setattr(mlflow.MlflowClient, name, lambda self, *a, _real=real, _n=name, **k: counted.update([_n]) or
                _real(self, *a, **k))
    experiment = experiment_id(store.client, "run-cost", uri)
    parent = client.create_run(experiment, run_name="search").info.run_id
    model = Path("model").resolve()
    model.mkdir(exist_ok=True)
    torch.save(torch.nn.Sequential(torch.nn.Linear(30, 32), torch.nn.Linear(32, 16), torch.nn.Linear(16, 1))
               .state_dict(), model / "model.pt")
    (model / "model.json").write_text(json.dumps({"hidden_sizes": [32, 16]}))
    tracker = TrialTracker(store, experiment, parent, EPOCHS)
    mlflow.set_tracking_uri(uri)
    mlflow.set_experiment(experiment_id=experiment)
    arms = {"mlflow minimum": lambda i: _minimal(client, experiment, parent, model, i),
            "hpsearch tracker": lambda i: _tracked(tracker, model, i),
            "hand-tracked script": lambda i: _by_hand(client, model, i)}
    figures: dict[str, dict[str, list[float]]] = {arm: {"cpu": [], "wall": [], "calls": []} for arm in arms}
    with mlflow.start_run(run_name="search"):
        for arm, write in arms.items():  # warm-up: the first runs of each arm pay for caches and imports
            for i in range(10):
                write(f"warm-{arm}-{i}")
        for block in range(cfg.repeats):
            for arm, write in arms.items():
                counted.clear()
                cpu, wall = time.process_time(), time.perf_counter()
                for i in range(cfg.runs):
                    write(f"{block}-{i}")
                store.call(lambda c: None)  # nothing is left queued
                figures[arm]["cpu"].append(1000 * (time.process_time() - cpu) / cfg.runs)
                figures[arm]["wall"].append(1000 * (time.perf_counter() - wall) / cfg.runs)
                figures[arm]["calls"].append(sum(counted.values()) / cfg.runs)
    print(json.dumps({arm: {"cpu_ms": statistics.median(f["cpu"]), "wall_ms": statistics.median(f["wall"]),
                            "cpu_ms_blocks": f["cpu"], "calls_per_run": statistics.median(f["calls"]),
                            "runs": cfg.runs * cfg.repeats} for arm, f in figures.items()}))
    return 0


def _metrics(now: int) -> list[tuple[str, float, int, int]]:
    return [(key, 0.5 / epoch, now, epoch) for epoch in range(1, EPOCHS + 1)
            for key in ("train_loss", "val_loss", "val_accuracy")]


def _minimal(client: mlflow.MlflowClient, experiment: str, parent: str, model: Path, name: str) -> None:
    run_id = client.create_run(experiment, run_name=name, tags={"mlflow.parentRunId": parent}).info.run_id
    client.log_batch(run_id, metrics=[Metric(*m) for m in _metrics(int(time.time() * 1000))],
                     params=[Param(k, v) for k, v in PARAMS.items()], tags=[RunTag("hpsearch.status", "completed")])
    client.log_artifact(run_id, str(model / "model.pt"), "model")
    client.set_terminated(run_id)


def _tracked(tracker: TrialTracker, model: Path, name: str) -> None:
    tracker.trial_started(name, PARAMS)
    for epoch in range(1, EPOCHS + 1):
        tracker.epoch_reported(name, {"epoch": epoch, "train_loss": 0.5 / epoch, "val_loss": 0.5 / epoch,
                                      "val_accuracy": 0.5 / epoch})
    tracker.trial_ended(name, model_dir=str(model))


def _by_hand(client: mlflow.MlflowClient, model: Path, name: str) -> None:
    with mlflow.start_run(nested=True, run_name=name) as run:
        for epoch in range(1, EPOCHS + 1):
            client.log_batch(run.info.run_id, metrics=[Metric("val_loss", 0.5 / epoch, int(time.time() * 1000),
                                                              epoch)])
        mlflow.log_params(PARAMS)
        mlflow.log_artifact(str(model / "model.pt"))


if __name__ == "__main__":
    raise SystemExit(main())
