"""Budgets a person thinks in, on every executor: a time limit, more trials for a finished search, a warm start
from another search, and a search that stops when it has what it needs (a patience, a goal).

Searches run through the command line (``hpsearch.cli.main.main``) against a real MLflow store; on Ray with the
test session's Ray.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from mlflow import MlflowClient

from hpsearch.cli.main import main
from tests.conftest import write_space

EXECUTORS = ["local", "batched", "ray"]
# About a third of a second an epoch on 2 busy cores, and far more epochs than a few seconds hold.
LONG = """
from sklearn.datasets import make_classification

def make_data():
    return make_classification(n_samples=3000, n_features=20, random_state=0)

search = Search(data=make_data, params={"layers": layers(1, 2, units=(8, 32)), "lr": loguniform(1e-3, 1e-2),
                "batch_size": 16}, num_samples=50, max_epochs=3000, scheduler="fifo", experiment="b")
"""
SMALL = ("search = Search(data='sklearn:iris', params={{'layers': layers(1, 2, units=(8, 32)), "
         "'lr': loguniform(1e-3, 1e-1)}}, num_samples={n}, max_epochs=2, scheduler='fifo', experiment='{name}'{more})")


@pytest.fixture
def on(request, monkeypatch):
    """The executor of the test, with the test session's Ray for ``ray``; without Ray for the others (as in a
    fresh process: a Ray another test started would put the batched populations on Ray)."""
    executor = request.param
    if executor == "ray":
        request.getfixturevalue("ray_session")
    else:
        monkeypatch.delitem(sys.modules, "ray", raising=False)
    return executor


def _client(workdir: Path) -> MlflowClient:
    return MlflowClient(f"sqlite:///{workdir / 'mlruns' / 'mlflow.db'}")


def _search(workdir: Path, experiment: str) -> tuple[object, list]:
    """The experiment's latest search's parent run, and its trials' runs by name."""
    client = _client(workdir)
    exp = client.get_experiment_by_name(experiment).experiment_id
    parent = client.search_runs([exp], "tags.`hpsearch.kind` = 'search'", order_by=["attributes.start_time DESC"])[0]
    trials = client.search_runs([exp], f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'", max_results=1000)
    return parent, sorted(trials, key=lambda r: r.info.run_name)


def _searched(run) -> dict[str, str]:
    return {k: v for k, v in run.data.params.items() if k == "lr" or k.startswith(("n_layers", "units_"))}


@pytest.mark.parametrize("on", EXECUTORS, indirect=True)
def test_a_time_budget_ends_a_long_search_with_its_trials_stopped_for_it_and_a_published_model(workdir, capsys, on):
    space = write_space(workdir, LONG)

    assert main(["run", str(space), "--executor", on, "--time-budget", "8s", "--no-plots"]) == 0

    out = capsys.readouterr().out
    assert out.rstrip().splitlines()[-1].startswith("the search ended: its time budget of 8s was spent"), out[-2000:]
    parent, trials = _search(workdir, "b")
    assert parent.info.status == "FINISHED" and parent.data.tags["hpsearch.end_reason"] == "time budget"
    assert parent.data.params["time_budget"] == "8.0" and parent.data.metrics["time_budget_s"] == 8
    assert parent.data.metrics["time_budget_used_s"] >= 8
    assert trials and all(t.info.status == "FINISHED" for t in trials)
    stopped = [t for t in trials if t.data.tags["hpsearch.status"] == "stopped"]
    assert stopped and {t.data.tags["hpsearch.stop_reason"] for t in stopped} == {"time budget"}
    assert all(t.data.metrics["epochs_trained"] < 3000 for t in trials)
    client = _client(workdir)
    for trial in stopped:  # each stopped at the end of an epoch, with that epoch's model
        assert client.list_artifacts(trial.info.run_id, "model")
        steps = [m.step for m in client.get_metric_history(trial.info.run_id, "val_loss")]
        assert steps[-1] == trial.data.metrics["epochs_trained"]
    assert client.search_model_versions("name = 'b'")


@pytest.mark.parametrize("on", EXECUTORS, indirect=True)
def test_a_finished_search_resumed_to_more_trials_keeps_one_parent_its_trials_and_their_numbering(
        workdir, capsys, on):
    space = write_space(workdir, SMALL.format(n=3, name="more", more=f", executor='{on}'"))
    assert main(["run", str(space), "--no-plots"]) == 0
    parent, first = _search(workdir, "more")
    versions = len(_client(workdir).search_model_versions("name = 'more'"))

    assert main(["resume", "more", "--num-samples", "5"]) == 0

    again, trials = _search(workdir, "more")
    assert again.info.run_id == parent.info.run_id and again.info.status == "FINISHED"
    assert [t.info.run_name for t in trials] == [f"trial_{i:03d}" for i in range(5)]
    assert [(t.info.run_id, t.info.end_time) for t in trials[:3]] == [(t.info.run_id, t.info.end_time) for t in first]
    # The searcher was told the 3 trials first: with the same seed, a searcher told nothing would propose
    # trial_000's values again.
    assert _searched(trials[3]) != _searched(trials[0])
    best_before = parent.data.tags["hpsearch.best_run_id"]
    beaten = again.data.tags["hpsearch.best_run_id"] != best_before
    assert len(_client(workdir).search_model_versions("name = 'more'")) == versions + beaten
    capsys.readouterr()

    before = _client(workdir).get_run(parent.info.run_id)
    assert main(["resume", "more", "--num-samples", "4"]) == 2

    err = capsys.readouterr().err
    assert "--num-samples 4 is fewer than the search" in err and "has (trials: 5)" in err
    assert len(err.splitlines()) == 1
    after = _client(workdir).get_run(parent.info.run_id)
    assert (after.data.params, after.data.tags, after.info.status) == (before.data.params, before.data.tags,
                                                                       "FINISHED")


@pytest.mark.parametrize("on", ["local", "ray"], indirect=True)
def test_a_warm_started_search_proposes_from_the_earlier_search_and_names_it(workdir, capsys, on):
    source = write_space(workdir, SMALL.format(n=4, name="source", more=", executor='local'"), "source.py")
    cold = write_space(workdir, SMALL.format(n=1, name="cold", more=", executor='local'"), "cold.py")
    warm = write_space(workdir, SMALL.format(n=1, name="warm", more=f", executor='{on}', warm_start='source'"),
                       "warm.py")
    assert main(["run", str(source), "--no-plots"]) == 0
    assert main(["run", str(cold), "--no-plots"]) == 0
    capsys.readouterr()

    assert main(["run", str(warm), "--no-plots"]) == 0

    out = capsys.readouterr().out
    source_parent, source_trials = _search(workdir, "source")
    assert f"warm start from search {source_parent.info.run_id} of experiment 'source': the searcher is told " \
           "4 of its 4 ended trials" in out
    warm_parent, [warm_trial] = _search(workdir, "warm")
    assert warm_parent.data.tags["hpsearch.warm_start"] == source_parent.info.run_id
    assert warm_parent.data.params["warm_start"] == "source"
    [cold_trial] = _search(workdir, "cold")[1]
    assert _searched(cold_trial) == _searched(source_trials[0])  # the same seed, told nothing: the same proposal
    assert _searched(warm_trial) != _searched(cold_trial)


@pytest.mark.parametrize(("warm_start", "lr", "said"), [
    ("nowhere", "loguniform(1e-3, 1e-1)", "warm_start: no experiment 'nowhere' in the tracking store"),
    ("source", "loguniform(0.5, 0.9)", "warm_start: none of the 2 ended trials of search"),
])
def test_a_warm_start_from_nothing_or_from_a_search_that_shares_nothing_is_refused_writing_nothing(
        workdir, capsys, warm_start, lr, said):
    source = write_space(workdir, SMALL.format(n=2, name="source", more=", executor='local'"), "source.py")
    assert main(["run", str(source), "--no-plots"]) == 0
    space = write_space(workdir, SMALL.format(n=2, name="new", more=f", executor='local', warm_start='{warm_start}'")
                        .replace("loguniform(1e-3, 1e-1)", lr))
    capsys.readouterr()

    assert main(["run", str(space)]) == 2

    err = capsys.readouterr().err
    assert said in err and len(err.strip().splitlines()) == 1, err
    assert _client(workdir).get_experiment_by_name("new") is None


@pytest.mark.parametrize(("on", "until", "reason"), [("local", ["--patience", "2"], "patience"),
                                                     ("batched", ["--goal", "0.6"], "goal"),
                                                     ("ray", ["--goal", "0.6"], "goal")], indirect=["on"])
def test_a_patience_or_a_goal_ends_the_search_and_it_says_why(workdir, capsys, on, until, reason):
    space = write_space(workdir, SMALL.format(n=30, name="enough", more=", metric='val_accuracy'")
                        .replace("max_epochs=2", "max_epochs=40"))

    assert main(["run", str(space), "--executor", on, "--no-plots", *until]) == 0

    last = capsys.readouterr().out.rstrip().splitlines()[-1]
    assert last.startswith("the search ended: ") and f"({reason}" in last, last
    parent, trials = _search(workdir, "enough")
    assert parent.data.tags["hpsearch.end_reason"] == reason
    assert len(trials) < 30 and all(t.info.status == "FINISHED" for t in trials)
    if reason == "goal":
        assert max(t.data.metrics["val_accuracy"] for t in trials) >= 0.6
        assert all(t.data.tags.get("hpsearch.stop_reason") in (None, "goal") for t in trials)


@pytest.mark.parametrize(("where", "value", "said"), [
    ("cli", "0", "time_budget: must be seconds > 0"),
    ("cli", "-5", "time_budget: must be seconds > 0"),
    ("cli", "10x", "time_budget: must be seconds > 0 or a duration such as '90s', '10m', '2h' or '1h30m', "
                   "but got '10x'"),
    ("space", "'soon'", "time_budget: must be seconds > 0"),
    ("space", "0", "time_budget: must be seconds > 0"),
])
def test_a_time_budget_that_is_not_a_duration_is_one_line_naming_it_and_nothing_is_written(
        workdir, capsys, where, value, said):
    extra = f", time_budget={value}" if where == "space" else ""
    space = write_space(workdir, SMALL.format(n=2, name="bad", more=extra))
    options = ["--time-budget", value] if where == "cli" else []

    assert main(["run", str(space), *options]) == 2

    err = capsys.readouterr().err
    assert said in err and len(err.strip().splitlines()) == 1, err
    assert not (workdir / "mlruns").exists()
