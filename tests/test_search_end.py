"""Nothing after the trials fails a search: the figures, the test evaluation, the default tree and the best model's
publishing end once every trial's result is tracked, so an error there is a warning and a tag, never the search's
exit code."""

from __future__ import annotations

from pathlib import Path

from mlflow import MlflowClient

from hpsearch.cli.main import main
from hpsearch.results import publish
from tests.conftest import write_space

# Every trial gets the same validation accuracy: a learning rate this small changes no weight, and every trial
# starts from the same seeded initialisation; only the dropout (not used when evaluating) is searched.
TIED = ("search = Search(data='sklearn:iris', params={'lr': 1e-12, 'dropout': uniform(0.0, 0.1)}, "
        "metric='val_accuracy', num_samples=3, max_epochs=1, executor='local', experiment='tied')")


def _the_search(workdir: Path) -> tuple[MlflowClient, object]:
    client = MlflowClient(f"sqlite:///{workdir / 'mlruns' / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("tied").experiment_id
    [parent] = client.search_runs([experiment], "tags.`hpsearch.kind` = 'search'")
    return client, parent


def test_a_search_whose_trials_all_tie_ends_finished_with_the_importance_figure_skipped(workdir, capsys):
    space = write_space(workdir, TIED)

    assert main(["run", str(space), "-v"]) == 0  # a figure with nothing to show is said with --verbose only

    out = capsys.readouterr().out
    assert "param_importances skipped: every trial has the same val_accuracy" in out
    client, parent = _the_search(workdir)
    assert parent.info.status == "FINISHED"
    children = client.search_runs([parent.info.experiment_id], f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'")
    assert len({c.data.metrics["val_accuracy"] for c in children}) == 1  # the trials really tie
    logged = {f.path for f in client.list_artifacts(parent.info.run_id, "plots")}
    assert "plots/learning_curves.png" in logged and "plots/param_importances.png" not in logged
    assert not any(key.startswith("hpsearch.warning.") for key in parent.data.tags)


def test_a_step_after_the_trials_that_raises_is_a_warning_and_a_tag_and_the_search_exits_as_its_trials_did(
        workdir, capsys, monkeypatch):
    def registry_down(*args, **kwargs):
        raise RuntimeError("the model registry refused the model")

    monkeypatch.setattr(publish, "on_search_end", registry_down)
    space = write_space(workdir, TIED)

    assert main(["run", str(space)]) == 0

    captured = capsys.readouterr()
    assert "warning: the best model's publishing failed; the search's results stand: RuntimeError: the model " \
           "registry refused the model" in captured.out
    assert "Traceback" not in captured.out + captured.err
    client, parent = _the_search(workdir)
    assert parent.info.status == "FINISHED"
    assert parent.data.tags["hpsearch.warning.publish"] == "RuntimeError: the model registry refused the model"
    assert "hpsearch.best_run_id" in parent.data.tags  # the outcome is still recorded
    traceback_file = client.download_artifacts(parent.info.run_id, "warnings/publish.txt", str(workdir))
    assert "registry_down" in Path(traceback_file).read_text()
    assert "plots/learning_curves.png" in {f.path for f in client.list_artifacts(parent.info.run_id, "plots")}


def test_figures_that_cannot_be_drawn_never_fail_the_search(workdir, capsys, monkeypatch):
    from hpsearch.figures import drawing

    def broken(*args, **kwargs):
        raise ValueError("a figure that cannot be drawn")

    monkeypatch.setattr(drawing, "start_search_plots", broken)
    space = write_space(workdir, TIED)

    assert main(["run", str(space)]) == 0

    assert "warning: the figures failed; the search's results stand: ValueError" in capsys.readouterr().out
    _, parent = _the_search(workdir)
    assert parent.info.status == "FINISHED"
    assert parent.data.tags["hpsearch.warning.plots"] == "ValueError: a figure that cannot be drawn"


def test_a_default_tree_that_fails_beside_the_trials_is_a_warning_and_the_search_publishes_its_model(
        workdir, capsys, monkeypatch):
    from hpsearch.results import baseline

    def out_of_memory(data):
        raise MemoryError("the tree's copy of the table did not fit")

    monkeypatch.setattr(baseline, "fit_tree", out_of_memory)
    space = write_space(workdir, TIED)

    assert main(["run", str(space), "--no-plots"]) == 0

    assert "warning: the tree baseline failed; the search's results stand: MemoryError" in capsys.readouterr().out
    client, parent = _the_search(workdir)
    assert parent.info.status == "FINISHED" and "hpsearch.best_run_id" in parent.data.tags
    assert parent.data.tags["hpsearch.warning.tree"] == "MemoryError: the tree's copy of the table did not fit"
    assert not [key for key in parent.data.metrics if key.startswith("tree_")]
    assert client.get_model_version_by_alias("tied", "best").run_id
