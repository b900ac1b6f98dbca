"""ASHA's grace period follows the budget (a quarter of max_epochs) unless the space file sets it, is printed, and
is where both executors first stop trials; by default half the trials go on at each rung."""

from __future__ import annotations

import pytest
from mlflow import MlflowClient

from hpsearch import Search, asha
from hpsearch.cli.main import main
from tests.conftest import write_space


@pytest.mark.parametrize(("scheduler", "max_epochs", "grace"), [
    ("asha", 30, 7), ("asha", 100, 25), ("asha", 5, 1), ("asha", 1, 1),
    (asha(grace_period=3), 30, 3), (asha(grace_period=50), 30, 30), (asha(reduction_factor=3), 40, 10),
])
def test_the_grace_period_is_a_quarter_of_max_epochs_unless_the_space_file_sets_it(scheduler, max_epochs, grace):
    search = Search(data="sklearn:iris", scheduler=scheduler, max_epochs=max_epochs)
    assert search.scheduler.grace(max_epochs) == grace


def test_a_search_prints_the_grace_period_it_chose_records_it_and_stops_no_trial_before_it(workdir, capsys):
    space = write_space(workdir, "search = Search(data='sklearn:iris', params={'lr': loguniform(1e-4, 1e-1)}, "
                                 "num_samples=8, max_epochs=20, executor='local', experiment='grace')")

    assert main(["run", str(space), "--no-plots"]) == 0

    assert "ASHA: grace period 5 epochs (max_epochs 20 / 4, at least 1), reduction factor 2" in capsys.readouterr().out
    client = MlflowClient(f"sqlite:///{workdir / 'mlruns' / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("grace").experiment_id])
    [parent] = [r for r in runs if r.data.tags.get("hpsearch.kind") == "search"]
    assert parent.data.params["grace_period"] == "5" and parent.data.params["reduction_factor"] == "2"
    stopped = [r for r in runs if r.data.tags.get("hpsearch.status") == "stopped"]
    assert stopped, "the successive-halving pruner stopped no trial: the test proves nothing"
    assert {int(r.data.metrics["epochs_trained"]) for r in stopped} <= {5, 10}  # its rungs: 5 x 2^k
