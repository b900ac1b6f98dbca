"""The in-process executor (``--executor local``): the same MLflow layout as a Ray search, and ``auto``'s choice."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from mlflow import MlflowClient

from hpsearch.cli.main import main
from hpsearch.execution.choice import AUTO_LOCAL_BUDGET
from hpsearch.execution.choice import choose_local_or_ray as choose_executor
from hpsearch.model.network import load_model
from hpsearch.space import Search
from tests.conftest import SPACES


def test_a_local_search_writes_one_parent_and_one_child_per_trial_like_a_ray_search(workdir: Path, capsys):
    args = ["run", str(SPACES / "reference.py"), "--num-samples", "6", "--max-epochs", "3", "--executor", "local"]
    assert main(args) == 0
    assert "in-process" in capsys.readouterr().out
    client = MlflowClient(f"sqlite:///{workdir / 'mlruns' / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("reference").experiment_id], max_results=100)
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert len(parents) == 1 and len(children) == 6
    parent = parents[0]
    assert parent.info.status == "FINISHED" and parent.data.params["executor"] == "local"
    assert parent.data.metrics["trials_completed"] + parent.data.metrics.get("trials_stopped", 0) == 6
    assert "best_test_accuracy" in parent.data.metrics
    statuses = []
    for child in children:
        assert child.info.status == "FINISHED" and child.data.params["optimizer"] == "sgd"
        status = child.data.tags["hpsearch.status"]
        statuses.append(status)
        epochs = int(child.data.metrics["epochs_trained"])
        assert (status == "completed") == (epochs == 3)
        if status == "stopped":
            assert child.data.tags["hpsearch.stop_reason"] == "scheduler"
        history = client.get_metric_history(child.info.run_id, "val_loss")
        assert [m.step for m in history] == list(range(1, epochs + 1))
        model, spec = load_model(client.download_artifacts(child.info.run_id, "model", str(workdir / "dl" / status)))
        assert spec.hidden_sizes == (int(child.data.params["units_0"]), int(child.data.params["units_1"]))
    assert "stopped" in statuses and "completed" in statuses  # successive halving pruned some trials


@pytest.mark.parametrize(("samples", "epochs", "rows", "gpu", "resume", "expected"), [
    (16, 3, 700, 0, False, "local"),  # the reference search
    (24, 20, 1257, 0, False, "ray"),  # the digits search: budget over the limit
    (1, 1, AUTO_LOCAL_BUDGET, 0, False, "local"),
    (1, 1, AUTO_LOCAL_BUDGET + 1, 0, False, "ray"),
    (2, 2, 10, 1, False, "ray"),  # GPU trials go to Ray
    (2, 2, 10, 0, True, "ray"),  # resuming needs Ray's saved state
])
def test_auto_picks_local_only_for_a_small_cpu_budget(samples, epochs, rows, gpu, resume, expected, monkeypatch):
    monkeypatch.delitem(sys.modules, "ray", raising=False)  # a Ray started by another test would mean "ray"
    search = Search(data="sklearn:iris", num_samples=samples, max_epochs=epochs, resources={"cpu": 1, "gpu": gpu})
    assert choose_executor("auto", search, rows, resume=resume) == expected
    assert choose_executor("ray", search, 10, resume=False) == "ray"
