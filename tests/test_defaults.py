"""A search starts from what works: its first trial is the built-in network's default configuration within the
user's space, and a space file without ``params`` searches a default space (said at the start)."""

from __future__ import annotations

from pathlib import Path

import pytest
from mlflow import MlflowClient

from hpsearch import Search
from hpsearch.cli.main import main
from hpsearch.space.defaults import DEFAULT_CONFIGURATION, default_point
from hpsearch.space.distributions import choice, layers, loguniform, uniform
from tests.conftest import write_space

#: The space a user writes from the README (bench/corpus.py's USER_SPACE).
USER_SPACE = ('{"layers": layers(1, 3, units=(8, 128)), "lr": loguniform(1e-4, 1e-1), "dropout": uniform(0.0, 0.5), '
              '"weight_decay": loguniform(1e-6, 1e-2), "batch_size": choice([32, 48, 128])}')


def _trials(workdir: Path, experiment: str) -> list:
    client = MlflowClient(f"sqlite:///{workdir / 'mlruns' / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name(experiment).experiment_id],
                              "tags.`hpsearch.kind` = 'trial'", order_by=["attributes.start_time ASC"])
    return sorted(runs, key=lambda r: r.info.run_name)


@pytest.mark.parametrize("executor", ["local", "batched", "ray"])
def test_the_first_trial_is_the_default_configuration_within_the_users_space(workdir, capsys, executor, request):
    if executor == "ray":
        request.getfixturevalue("ray_session")
    space = write_space(workdir, f"search = Search(data='sklearn:wine', params={USER_SPACE}, num_samples=3, "
                                 "max_epochs=2, scheduler='fifo')\n")
    assert main(["run", str(space), "--executor", executor, "--no-plots", "--experiment", "first"]) == 0
    out = capsys.readouterr().out
    # the default's depth, its widths clipped to the space's 128, a batch size of 64 not offered: the nearest
    expected = {"n_layers": "3", "units_0": "128", "units_1": "128", "units_2": "128", "lr": "0.003",
                "dropout": "0.1", "weight_decay": "0.0001", "batch_size": "48"}
    assert "the first trial is the built-in network's default configuration within the space: n_layers=3" in out
    trials = [{k: v for k, v in run.data.params.items() if k in expected} for run in _trials(workdir, "first")]
    if executor == "ray":  # two trials start at once: which one Ray starts first is Ray's
        assert expected in trials
    else:
        assert trials[0] == expected and trials[1] != expected


def test_the_projection_clips_ranges_and_picks_the_nearest_option():
    space = {"layers": layers(1, 2, units=(300, 400)), "lr": loguniform(1e-2, 1e-1), "dropout": uniform(0.2, 0.5),
             "batch_size": choice([16, 512]), "optimizer": choice(["sgd", "rmsprop"]), "mine": uniform(0, 1)}
    assert default_point(space) == {"n_layers": 2, "units_0": 300, "units_1": 300, "lr": 0.01, "dropout": 0.2,
                                    "batch_size": 16, "optimizer": "sgd"}
    lists = Search(data="sklearn:iris", params={"layers": choice([[16], [256, 256], [512, 512, 512]])}).params
    assert default_point(lists) == {"layers": "512-512-512"}  # the default's depth first, then the nearest widths
    assert default_point({"lr": 0.1}) == {} and DEFAULT_CONFIGURATION["layers"] == [256, 256, 256]


def test_a_search_without_params_searches_the_default_space_and_says_so(workdir, capsys):
    space = write_space(workdir, "search = Search(data='sklearn:iris', num_samples=3, max_epochs=1)\n")
    assert main(["run", str(space), "--executor", "local", "--no-plots", "--experiment", "nothing"]) == 0
    out = capsys.readouterr().out
    assert "params: none given, so the built-in network's default space is searched: layers(1, 3, units=" in out
    configurations = {tuple(sorted(run.data.params.items())) for run in _trials(workdir, "nothing")}
    assert len(configurations) == 3  # three configurations, not one trained three times
