"""The drawer: a search run as a program draws its figures in a forked process, and logs every one of them.

Each search runs as its own ``python`` process (as a user runs it): the drawer forks only where no Ray runs in
the process, and the test process may hold the suite's Ray.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from mlflow import MlflowClient

from tests.conftest import SPACES
from tests.processes import env_logging_imports, imports


def _search(workdir: Path, kill_drawer: bool = False) -> dict[str, list[int]]:
    """Run a search as a user does; returns the processes that imported matplotlib, plotly: the driver's pid or
    another's. With ``kill_drawer``, the drawer (the driver's child that loads matplotlib) is killed as it starts."""
    log = workdir / "imports.log"
    args = ["run", str(SPACES / "reference.py"), "--num-samples", "4", "--max-epochs", "2", "--executor", "local"]
    driver = subprocess.Popen([sys.executable, "-m", "hpsearch", *args], cwd=workdir, text=True,
                              env=env_logging_imports(log, "matplotlib", "plotly"),
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    output = []
    threading.Thread(target=lambda: output.extend(driver.stdout), daemon=True).start()
    killed = None
    while kill_drawer and killed is None and driver.poll() is None:
        drawer = next((pid for pid, ppid, name in imports(log) if name == "matplotlib" and ppid == driver.pid), None)
        if drawer is not None:
            os.kill(drawer, signal.SIGKILL)
            killed = drawer
        time.sleep(0.05)
    assert driver.wait(timeout=300) == 0, "".join(output)[-3000:]
    assert not kill_drawer or killed is not None
    loaded = imports(log)
    return {"driver": [name for pid, _, name in loaded if pid == driver.pid],
            "drawers": sorted({pid for pid, ppid, name in loaded if name == "matplotlib" and ppid == driver.pid})}


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
    loaded = _search(workdir)
    assert loaded["driver"] == [] and len(loaded["drawers"]) == 1
    parent, children = _artifacts(workdir)
    for name in ("learning_curves.png", "best_so_far.png", "parallel_coordinates.png", "param_importances.png",
                 "best_trial_loss.png", "confusion_matrix.png", "interactive.html", "figures.json",
                 "architecture.txt"):
        assert f"plots/{name}" in parent
    assert len(children) == 4
    assert all(plots == ["plots/loss_curve.png"] for plots in children.values())


def test_when_the_drawer_dies_the_driver_draws_every_figure_itself(workdir: Path):
    loaded = _search(workdir, kill_drawer=True)
    assert len(loaded["drawers"]) == 1
    assert "matplotlib" in loaded["driver"]  # drawn here, after all
    parent, children = _artifacts(workdir)
    assert {"plots/learning_curves.png", "plots/figures.json", "plots/interactive.html"} <= set(parent)
    assert len(children) == 4
    assert all(plots == ["plots/loss_curve.png"] for plots in children.values())


def test_only_the_best_trials_get_a_loss_curve_png_and_the_report_draws_those_it_lists(workdir: Path):
    """A PNG per trial would cost a long search more than its trials: the best few get one, at the end."""
    from hpsearch.cli.main import main
    from hpsearch.figures.visualize import BEST_TRIALS_DRAWN

    args = ["run", str(SPACES / "reference.py"), "--num-samples", str(BEST_TRIALS_DRAWN + 3), "--max-epochs", "2",
            "--executor", "local", "-q"]
    assert main(args) == 0
    client = MlflowClient(f"sqlite:///{workdir / 'mlruns' / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("reference").experiment_id])
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    ranked = sorted(children, key=lambda r: r.data.metrics["val_loss"])
    drawn = {r.info.run_name for r in children if client.list_artifacts(r.info.run_id, "plots")}
    assert len(children) == BEST_TRIALS_DRAWN + 3
    assert drawn == {r.info.run_name for r in ranked[:BEST_TRIALS_DRAWN]}

    assert main(["report", "reference", "-o", "report.html", "--top", "2"]) == 0
    page = (workdir / "report.html").read_text()
    section = page.split("Loss curves of the best trials")[1]
    assert [name for name in (r.info.run_name for r in ranked) if f">{name}</figcaption>" in section] == \
        [r.info.run_name for r in ranked[:2]]
