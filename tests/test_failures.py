"""A trial whose worker dies: retried from its checkpoint with --max-failures (same child run), else failed."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import pytest
from mlflow import MlflowClient

from hpsearch.cli.main import main
from tests.conftest import write_space

pytestmark = pytest.mark.e2e

# Epochs of a few tenths of a second on an idle machine: enough of them that the trial still runs when its second
# epoch reaches MLflow (its metrics are written about once a second).
EPOCHS = 60
SPACE = f"""
from sklearn.datasets import make_classification

def make_data():
    return make_classification(n_samples=12000, n_features=20, random_state=0)

search = Search(data=make_data, params={{"layers": [32], "batch_size": 16}}, num_samples=1, max_epochs={EPOCHS},
                scheduler="fifo", experiment="retry")
"""


def _trial_workers() -> list[int]:
    """The pids of Ray's trial workers (their process title names the trainable)."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except (OSError, ValueError):
            continue
        if "ImplicitFunc" in cmdline:
            found.append(int(entry.name))
    return found


def _run_and_kill_the_worker(workdir: Path, space: Path, *args: str) -> list[int]:
    """Run a search in a thread, kill its trial's worker after two epochs, return the exit code."""
    codes: list[int] = []
    search = threading.Thread(target=lambda: codes.append(main(["run", str(space), "-q", *args])))
    search.start()
    deadline = time.monotonic() + 240
    workers: list[int] = []
    while not workers:  # two epochs in MLflow (checkpoints exist) and the trial's worker still at work: kill it
        assert time.monotonic() < deadline and search.is_alive(), "the trial's worker never ran its second epoch"
        time.sleep(0.2)
        workers = _trial_workers() if _epochs_logged(workdir / "mlruns" / "mlflow.db") >= 2 else []
    for pid in workers:
        os.kill(pid, signal.SIGKILL)
    search.join(timeout=300)
    return codes


def _epochs_logged(store: Path) -> int:
    if not store.exists():
        return 0
    client = MlflowClient(f"sqlite:///{store}")
    experiment = client.get_experiment_by_name("retry")
    if experiment is None:
        return 0
    runs = client.search_runs([experiment.experiment_id], filter_string="tags.`hpsearch.kind` = 'trial'")
    return max((len(client.get_metric_history(r.info.run_id, "val_loss")) for r in runs), default=0)


def test_max_failures_retries_a_trial_whose_worker_died_from_its_checkpoint(ray_session, workdir):
    space = write_space(workdir, SPACE)
    codes = _run_and_kill_the_worker(workdir, space, "--max-failures", "1")
    assert codes == [0]

    client = MlflowClient(f"sqlite:///{workdir / 'mlruns' / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("retry")
    children = client.search_runs([experiment.experiment_id], filter_string="tags.`hpsearch.kind` = 'trial'")
    assert len(children) == 1, "the retried trial keeps its one run"
    child = children[0]
    assert child.info.status == "FINISHED" and child.data.tags["hpsearch.status"] == "completed"
    steps = [m.step for m in client.get_metric_history(child.info.run_id, "val_loss")]
    assert steps == list(range(1, EPOCHS + 1)), steps


def test_a_trial_whose_worker_dies_without_retries_fails_and_is_never_the_best(ray_session, workdir):
    space = write_space(workdir, SPACE)
    codes = _run_and_kill_the_worker(workdir, space)
    assert codes == [1], "every trial failed: exit code 1"
    client = MlflowClient(f"sqlite:///{workdir / 'mlruns' / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("retry")
    runs = client.search_runs([experiment.experiment_id])
    child = next(r for r in runs if r.data.tags.get("hpsearch.kind") == "trial")
    parent = next(r for r in runs if r.data.tags.get("hpsearch.kind") == "search")
    assert child.info.status == "FAILED" and child.data.tags["hpsearch.status"] == "failed"
    assert parent.info.status == "FINISHED" and "hpsearch.best_run_id" not in parent.data.tags
