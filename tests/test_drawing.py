"""The figures: a search run as a program logs every one of them to its runs."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from mlflow import MlflowClient

from tests.conftest import REPO, SPACES


def _search(workdir: Path) -> None:
    """Run a search as a user does."""
    args = ["run", str(SPACES / "reference.py"), "--num-samples", "4", "--max-epochs", "2", "--executor", "local"]
    result = subprocess.run([sys.executable, "-m", "hpsearch", *args], cwd=workdir, text=True, capture_output=True,
                            env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=300)
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]


def _artifacts(workdir: Path) -> tuple[list[str], dict[str, list[str]]]:
    """The parent run's plots and each child run's plots."""
    client = MlflowClient(f"sqlite:///{workdir / 'mlruns' / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("reference")
    runs = client.search_runs([experiment.experiment_id])
    parent = next(r for r in runs if r.data.tags.get("hpsearch.kind") == "search")
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    listing = lambda run_id: [a.path for a in client.list_artifacts(run_id, "plots")]  # noqa: E731
    return listing(parent.info.run_id), {c.info.run_name: listing(c.info.run_id) for c in children}


def test_a_search_logs_every_figure_to_its_run_and_each_trials_loss_curve_to_the_trials_run(workdir: Path):
    _search(workdir)
    parent, children = _artifacts(workdir)
    for name in ("learning_curves.png", "best_so_far.png", "parallel_coordinates.png", "param_importances.png",
                 "best_trial_loss.png", "confusion_matrix.png", "interactive.html", "figures.json",
                 "architecture.txt"):
        assert f"plots/{name}" in parent
    assert len(children) == 4
    assert all(plots == ["plots/loss_curve.png"] for plots in children.values())
