"""A Ray trial reports its epochs to Ray Tune a few at a time and checkpoints only where needed (ASHA's decision
epochs, its last epoch): MLflow still gets every epoch, ASHA decides at its rungs, and an ended trial's model is
its best epoch's."""

from __future__ import annotations

from pathlib import Path

import pytest
from mlflow import MlflowClient
from ray.tune import ExperimentAnalysis

from hpsearch.cli.main import main
from hpsearch.data.sources import load_dataset
from hpsearch.execution.trainable import EARLIER_KEY
from hpsearch.model.network import load_model
from hpsearch.space import load_space
from hpsearch.training.fit import evaluate
from tests.conftest import write_space

pytestmark = pytest.mark.e2e

EPOCHS = 30
RUNGS = (2, 6, 18)  # grace period 2, reduction factor 3


def test_a_ray_search_reports_epochs_in_batches_yet_mlflow_has_every_epoch_at_its_time_and_each_model_is_its_best(
        ray_session, workdir):
    space = write_space(workdir, f"""
search = Search(
    data="sklearn:breast_cancer",
    params={{"layers": [16], "lr": loguniform(1e-5, 1e-1), "optimizer": "sgd"}},
    num_samples=8, max_epochs={EPOCHS}, scheduler=asha(grace_period=2, reduction_factor=3), searcher="random",
    experiment="batches",
)
""")
    assert main(["run", str(space), "--executor", "ray", "--no-plots"]) == 0
    client = MlflowClient(f"sqlite:///{workdir / 'mlruns' / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("batches").experiment_id
    children = client.search_runs([experiment], filter_string="tags.`hpsearch.kind` = 'trial'")
    assert len(children) == 8
    statuses = [c.data.tags["hpsearch.status"] for c in children]
    assert "stopped" in statuses and "completed" in statuses
    data = load_dataset(load_space(space), space)

    for child in children:
        epochs = int(child.data.metrics["epochs_trained"])
        assert epochs == EPOCHS if child.data.tags["hpsearch.status"] == "completed" else epochs in RUNGS
        history = client.get_metric_history(child.info.run_id, "val_loss")
        assert [m.step for m in history] == list(range(1, epochs + 1)), "one MLflow point per epoch"
        times = [m.timestamp for m in history]
        assert times == sorted(times) and (epochs < EPOCHS or len(set(times)) > len(RUNGS) + 2), \
            f"each epoch stamped when it ended, not when its report came (a trial sends at most 5): {times}"
        model_dir = client.download_artifacts(child.info.run_id, "model", str(workdir / child.info.run_id))
        model, spec = load_model(model_dir)
        best = min(history, key=lambda m: m.value)
        assert evaluate(model, data.val, spec)["loss"] == pytest.approx(best.value, rel=1e-5), \
            "the trial's model is its best epoch's"
        assert child.data.metrics["best_epoch"] == best.step

    reports = [t.last_result["training_iteration"] for t in ExperimentAnalysis(str(_ray_results(workdir))).trials]
    assert len(reports) == 8 and max(reports) <= len(RUNGS) + 2, f"reports per trial to Ray Tune: {reports}"


def _ray_results(workdir: Path) -> Path:
    (path,) = (workdir / "ray_results").iterdir()
    return path


def test_a_ray_trial_checkpoints_at_asha_rungs_its_last_epoch_and_every_few_seconds_and_reports_once_a_second():
    """Epochs of 0.1 s: a report about every second carrying the epochs since the one before, a checkpoint at each
    rung, at the last epoch and once 5 s passed since the last one; the epochs not reported go out on a failure."""
    from hpsearch.execution.trainable import CHECKPOINT_EVERY_S, REPORT_EVERY_S, Reporter

    now = [0.0]
    sent = []
    reporter = Reporter(lambda metrics, save: sent.append((metrics, save is not None)), node_id="n",
                        last_epoch=100, decision_epochs=[2, 6, 18], clock=lambda: now[0])
    for epoch in range(1, 101):
        now[0] += 0.1
        reporter({"epoch": epoch, "val_loss": 1.0 / epoch}, lambda directory: None)
    epochs = [[e["epoch"] for e in m[EARLIER_KEY]] + [m["epoch"]] for m, _ in sent]
    assert [e for batch in epochs for e in batch] == list(range(1, 101)), "every epoch once, in order"
    assert all(m["hpsearch_node_id"] == "n" for m, _ in sent)
    checkpointed = [m["epoch"] for m, saved in sent if saved]
    assert {2, 6, 18, 100} <= set(checkpointed) and len(checkpointed) <= 4 + 10 * 0.1 * 100 / CHECKPOINT_EVERY_S
    assert all(b - a <= CHECKPOINT_EVERY_S / 0.1 + 1 for a, b in zip([0, *checkpointed], checkpointed, strict=False))
    assert len(sent) <= 3 + 0.1 * 100 / REPORT_EVERY_S + 1 and max(len(batch) for batch in epochs) <= 11

    sent.clear()
    failing = Reporter(lambda metrics, save: sent.append((metrics, save is not None)), node_id="n", last_epoch=100,
                       decision_epochs=[], clock=lambda: now[0])
    failing({"epoch": 1, "val_loss": 0.5}, lambda directory: None)
    failing.flush()
    failing.flush()
    assert [(m["epoch"], saved) for m, saved in sent] == [(1, False)]
