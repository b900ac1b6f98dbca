"""The drawer: a search run as a program draws its figures in a forked process, and logs every one of them.

Each search runs as its own ``python`` process (as a user runs it): the drawer forks only where no Ray runs in
the process, and the test process may hold the suite's Ray.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from mlflow import MlflowClient

from tests.conftest import REPO, SPACES

SCRIPT = """
import json, os, signal, sys
from hpsearch import drawing
from hpsearch.cli import main

started = []
real_init = drawing.Drawer.__init__
def init(self):
    real_init(self)
    started.append(self)
drawing.Drawer.__init__ = init

if os.environ.get("KILL_DRAWER"):  # the drawer dies once the trials have ended
    real_start = drawing.start_search_plots
    def start(client, parent, best, test, drawer=None):
        for process in list(drawer._pool._processes.values()):
            os.kill(process.pid, signal.SIGKILL)
            process.join()
        return real_start(client, parent, best, test, drawer)
    drawing.start_search_plots = start

code = main(sys.argv[1:])
print(json.dumps({"code": code, "drawers": len(started), "drawn_as_trials_ended": len(started[0].drawn),
                  "matplotlib": "matplotlib" in sys.modules,
                  "plotly": "plotly" in sys.modules}))
"""


def _search(workdir: Path, **env: str) -> dict:
    args = ["run", str(SPACES / "reference.py"), "--num-samples", "4", "--max-epochs", "2", "--executor", "local"]
    result = subprocess.run([sys.executable, "-c", SCRIPT, *args], cwd=workdir, capture_output=True, text=True,
                            env={**_env(), **env}, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def _env() -> dict[str, str]:
    import os

    return {**os.environ, "PYTHONPATH": str(REPO)}


def _artifacts(workdir: Path) -> tuple[list[str], dict[str, list[str]]]:
    """The parent run's plots and each child run's plots."""
    client = MlflowClient(f"sqlite:///{workdir / 'mlruns' / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("reference")
    runs = client.search_runs([experiment.experiment_id])
    parent = next(r for r in runs if r.data.tags.get("hpsearch.kind") == "search")
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    listing = lambda run_id: [a.path for a in client.list_artifacts(run_id, "plots")]  # noqa: E731
    return listing(parent.info.run_id), {c.info.run_name: listing(c.info.run_id) for c in children}


def test_a_search_draws_its_figures_in_a_drawer_and_the_driver_never_loads_matplotlib(workdir: Path):
    figures = _search(workdir)
    assert figures == {"code": 0, "drawers": 1, "drawn_as_trials_ended": 4, "matplotlib": False, "plotly": False}
    parent, children = _artifacts(workdir)
    for name in ("learning_curves.png", "best_so_far.png", "parallel_coordinates.png", "param_importances.png",
                 "best_trial_loss.png", "confusion_matrix.png", "interactive.html", "figures.json",
                 "architecture.txt"):
        assert f"plots/{name}" in parent
    assert len(children) == 4
    assert all(plots == ["plots/loss_curve.png"] for plots in children.values())


def test_when_the_drawer_dies_the_driver_draws_every_figure_itself(workdir: Path):
    figures = _search(workdir, KILL_DRAWER="1")
    assert figures["code"] == 0 and figures["drawers"] == 1
    assert figures["matplotlib"]  # drawn here, after all
    parent, children = _artifacts(workdir)
    assert {"plots/learning_curves.png", "plots/figures.json", "plots/interactive.html"} <= set(parent)
    assert all(plots == ["plots/loss_curve.png"] for plots in children.values())
