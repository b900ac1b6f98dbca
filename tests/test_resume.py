"""Kill a search at several points, resume it, and check that the MLflow store lost and duplicated nothing.

Each search runs as a real separate process (its own Ray), killed with SIGKILL (its whole process group, as
when a machine dies) or SIGINT (Ctrl-C). The kill points are found by watching the real MLflow store.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from mlflow import MlflowClient

from hpsearch.tracking.store import LocalStore
from hpsearch.tracking.tracker import TrialTracker
from tests.conftest import write_space
from tests.searches import ENV, children, ctrl_c_live, epochs_logged, finished_histories, mid_search, rows

pytestmark = pytest.mark.e2e

TRIALS = 6
EPOCHS = 4
SPACE = f"""
from sklearn.datasets import make_classification

def make_data():
    \"\"\"An epoch of about a second: a Ray trial reports its epochs at most once a second, so with shorter ones a
    trial's epochs reach MLflow all at once, and no kill could land between two of them.\"\"\"
    return make_classification(n_samples=60000, n_features=20, random_state=0)

search = Search(data=make_data, params={{"layers": layers(1, 2, units=(16, 64)), "lr": loguniform(1e-3, 1e-2),
                "batch_size": 16}}, num_samples={TRIALS}, max_epochs={EPOCHS}, scheduler="fifo", experiment="r")
"""


def _start(workdir: Path, space: Path, *extra: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "hpsearch", "run", str(space), *extra], cwd=workdir,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
                            env=ENV, preexec_fn=ctrl_c_live)


def _parents(workdir: Path) -> list[tuple]:
    return rows(workdir, "SELECT r.run_uuid FROM runs r JOIN tags t ON t.run_uuid = r.run_uuid "
                         "WHERE t.key = 'hpsearch.kind' AND t.value = 'search'")


def _wait_until(process: subprocess.Popen, condition: Callable[[], bool], what: str, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        if process.poll() is not None:
            pytest.fail(f"the search ended before {what}: {process.stderr.read()[-2000:]}")
        time.sleep(0.05)
    process.kill()
    pytest.fail(f"timed out waiting for {what}")


def _kill(process: subprocess.Popen, sig: int) -> subprocess.CompletedProcess:
    if sig == signal.SIGKILL:
        os.killpg(process.pid, signal.SIGKILL)  # the driver and the Ray it started, as when a machine dies
    else:
        process.send_signal(sig)
    out, err = process.communicate(timeout=180)
    return subprocess.CompletedProcess(process.args, process.returncode, out, err)


def _check_final_store(workdir: Path, kept: dict[str, int], every_epoch: bool = False) -> None:
    """``every_epoch``: each trial has every epoch's metrics (a SIGKILL may lose the last second's)."""
    client = MlflowClient(f"sqlite:///{workdir / 'mlruns' / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("r")
    runs = client.search_runs([experiment.experiment_id], max_results=1000)
    parents = [r for r in runs if r.data.tags.get("hpsearch.kind") == "search"]
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    assert len(children) == TRIALS, "one child run per trial, no duplicates"
    assert len({c.data.tags["hpsearch.trial_id"] for c in children}) == TRIALS
    assert all(r.info.status in ("FINISHED", "FAILED") for r in runs), "no run left RUNNING or KILLED"
    assert all(c.data.tags["hpsearch.status"] == "completed" for c in children)
    for child in children:
        steps = [m.step for m in client.get_metric_history(child.info.run_id, "val_loss")]
        assert steps == sorted(set(steps)), f"{child.info.run_name} logged an epoch twice: {steps}"
        assert steps[-1] == EPOCHS
        if every_epoch:
            assert steps == list(range(1, EPOCHS + 1)), f"{child.info.run_name} lost an epoch: {steps}"
    logged = epochs_logged(workdir)
    for run_id, epochs in kept.items():  # trials that had finished before a kill were not run again
        assert logged[run_id] == epochs


def test_sigkill_at_start_up_mid_trial_and_between_trials_then_resume_loses_and_duplicates_nothing(workdir):
    space = write_space(workdir, SPACE)
    kill_points = [
        ("start-up", lambda: bool(_parents(workdir)) and not children(workdir)),
        ("mid-trial", lambda: mid_search(workdir, finished=0)),
        ("between trials", lambda: sum(s == "FINISHED" for _, s in children(workdir)) >= 3),
    ]
    kept: dict[str, int] = {}
    killed: list[int] = []
    process = _start(workdir, space)
    for name, reached in kill_points:
        _wait_until(process, reached, name)
        kept.update(finished_histories(workdir))
        _kill(process, signal.SIGKILL)
        killed.append(process.pid)
        assert len(_parents(workdir)) == 1
        process = _start(workdir, space, "--resume")
    result = process.communicate(timeout=300)
    assert process.returncode == 0, result[0][-2000:] + result[1][-3000:]
    assert "resuming search" in result[0]
    _check_final_store(workdir, kept)
    left = [p for pid in killed for p in Path(tempfile.gettempdir()).glob(f"hpsearch-data-{pid}-*")]
    assert not left, "the data files of killed searches are removed by the next search"


def test_ctrl_c_marks_runs_killed_prints_how_to_resume_and_resume_finishes(workdir):
    space = write_space(workdir, SPACE)
    process = _start(workdir, space)
    # The search's own output says when a trial has ended (the store writes a little behind it): Ctrl-C then,
    # while the other trials run.
    printed: list[str] = []
    reader = threading.Thread(target=lambda: printed.extend(process.stdout), daemon=True)
    reader.start()
    _wait_until(process, lambda: any(" completed " in line for line in printed), "a finished trial")
    assert process.poll() is None, "the search ended before the test could press Ctrl-C"
    os.killpg(process.pid, signal.SIGINT)  # as a terminal does: to the search's whole process group
    returncode, stderr = process.wait(timeout=180), process.stderr.read()
    reader.join(timeout=10)
    assert returncode == 130, "".join(printed)[-2000:] + stderr[-2000:]
    result = subprocess.CompletedProcess(process.args, returncode, "".join(printed), stderr)
    kept = finished_histories(workdir)  # the trials that had ended when Ctrl-C came (the others are KILLED)
    assert "resume with:\n  python -m hpsearch resume r\n" in result.stderr
    statuses = [s for _, s in children(workdir)]
    assert "RUNNING" not in statuses and "KILLED" in statuses
    assert rows(workdir, "SELECT status FROM runs r JOIN tags t ON t.run_uuid = r.run_uuid "
                          "WHERE t.key = 'hpsearch.kind' AND t.value = 'search'") == [("KILLED",)]

    resumed = subprocess.run([sys.executable, "-m", "hpsearch", "resume", "r"], cwd=workdir, capture_output=True,
                             text=True, timeout=300, env=ENV)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    _check_final_store(workdir, kept, every_epoch=True)
    client = MlflowClient(f"sqlite:///{workdir / 'mlruns' / 'mlflow.db'}")
    parent = _parents(workdir)[0][0]
    assert "error.txt" not in {a.path for a in client.list_artifacts(parent)}, "an interruption is no error"


def test_resume_of_a_finished_search_is_a_clear_error(ray_session, workdir, capsys):
    from hpsearch.cli.main import main

    space = write_space(workdir, "search = Search(data='sklearn:iris', num_samples=1, max_epochs=1)")
    assert main(["run", str(space)]) == 0
    capsys.readouterr()
    assert main(["run", str(space), "--resume"]) == 2
    out, err = capsys.readouterr()
    assert "finished (trials: 1): nothing to resume" in err and "loading data" not in out
    # the resume command says the same, before loading any data
    assert main(["resume", "space"]) == 2
    out, err = capsys.readouterr()
    assert "loading data" not in out and "without --resume" not in err
    assert f"nothing to resume; more trials: python -m hpsearch resume space --num-samples 2; a new search: " \
           f"python -m hpsearch run {space}" in err


def _files(folder: Path) -> set[str]:
    return {str(path.relative_to(folder)) for path in folder.rglob("*")}


@pytest.mark.parametrize("command", [["resume", "nothing"], ["run", "space.py", "--resume"]])
def test_a_resume_where_no_search_was_run_writes_nothing_and_names_the_store_as_the_user_knows_it(
        workdir, capsys, command):
    from hpsearch.cli.main import main

    write_space(workdir, "search = Search(data='sklearn:iris', num_samples=1, max_epochs=1)")
    before = _files(workdir)
    assert main(command) == 2
    err = capsys.readouterr().err
    assert _files(workdir) == before, "nothing written"
    assert err.startswith("error: no tracking store at mlruns/mlflow.db") and "?timeout" not in err, err
    assert len(err.strip().splitlines()) == 1


def test_a_resume_of_an_unknown_experiment_in_an_existing_store_creates_no_experiment(ray_session, workdir, capsys):
    from hpsearch.cli.main import main

    space = write_space(workdir, "search = Search(data='sklearn:iris', num_samples=1, max_epochs=1)")
    (workdir / "mlruns").mkdir()
    client = MlflowClient(f"sqlite:///{workdir / 'mlruns' / 'mlflow.db'}")
    client.create_experiment("other")
    for command in (["resume", "nothing"], ["run", str(space), "--resume", "--experiment", "nothing",
                                            "--executor", "ray"]):
        assert main(command) == 2
        assert "has no search to resume" in capsys.readouterr().err
    assert client.get_experiment_by_name("nothing") is None


@pytest.mark.parametrize("behind", ["trials", "searcher", "cut save"])
def test_a_resume_runs_num_samples_trials_when_a_kill_left_rays_saved_state_out_of_step_or_cut(
        ray_session, workdir, behind):
    import json

    import ray.cloudpickle as cloudpickle

    from hpsearch.cli.main import main

    space = write_space(workdir, "search = Search(data='sklearn:iris', num_samples=4, max_epochs=1, "
                                 "scheduler='fifo', experiment='s')")
    assert main(["run", str(space), "--no-plots"]) == 0
    # What a kill during Ray's background copy of its saved state can leave: one file two trials behind the other.
    folder = next((workdir / "ray_results").iterdir())
    if behind == "trials":  # Ray would think 4 trials proposed, restore 2, and end the search short of 4
        state_file = next(folder.glob("experiment_state-*.json"))
        state = json.loads(state_file.read_text())
        state["trial_data"] = state["trial_data"][:2]
        state_file.write_text(json.dumps(state))
    elif behind == "searcher":  # Ray would propose 2 trials more than num_samples
        searcher_file = next(folder.glob("search_gen_state-*.json"))
        searcher = cloudpickle.loads(searcher_file.read_bytes())
        searcher["counter"] = 2
        searcher_file.write_bytes(cloudpickle.dumps(searcher))
    else:  # a later run's save, its trials' snapshot cut short by the kill: Ray's restore would fail on it
        session = next(folder.glob("experiment_state-*.json")).name.removeprefix("experiment_state-")[:-5]
        later = _a_later_session(session)
        for path in list(folder.glob(f"*-{session}*")):
            path.with_name(path.name.replace(session, later)).write_bytes(path.read_bytes())
        cut = folder / f"experiment_state-{later}.json"
        cut.write_bytes(cut.read_bytes()[:1000])
    client = MlflowClient(f"sqlite:///{workdir / 'mlruns' / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("s").experiment_id
    parent = client.search_runs([experiment], "tags.`hpsearch.kind` = 'search'")[0].info.run_id
    client.set_terminated(parent, "KILLED")

    assert main(["run", str(space), "--resume", "--no-plots"]) == 0
    children = client.search_runs([experiment], f"tags.`mlflow.parentRunId` = '{parent}'")
    assert len(children) == 4
    assert {(c.info.status, c.data.tags["hpsearch.status"]) for c in children} == {("FINISHED", "completed")}
    if behind == "cut save":  # set aside; Ray restored the whole save before it
        assert {p.name.split(f"-{later}")[0] for p in folder.glob(f"*-{later}*.cut")} == \
            {"experiment_state", "search_gen_state", "searcher-state"}


def _a_later_session(session: str) -> str:
    """The name Ray would give the files of a run of the search started a day after ``session`` (Ray names a
    run's save files after its start, ``%Y-%m-%d_%H-%M-%S``, and restores the newest): any year, any date."""
    import datetime

    stamp = "%Y-%m-%d_%H-%M-%S"
    return (datetime.datetime.strptime(session, stamp) + datetime.timedelta(days=1)).strftime(stamp)


def test_a_trial_whose_run_lost_its_params_to_a_kill_gets_them_when_it_resumes(tmp_path):
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment = client.create_experiment("e", artifact_location=(tmp_path / "a").as_uri())
    parent = client.create_run(experiment).info.run_id
    # what a kill between the run's creation and its params leaves
    run_id = client.create_run(experiment, tags={"mlflow.parentRunId": parent, "hpsearch.trial_id": "t1",
                                                 "hpsearch.status": "running"}).info.run_id
    tracker = TrialTracker.resume(LocalStore(client=client), experiment, parent, max_epochs=2)
    assert tracker.trial_started("t1", {"lr": 0.01, "units_0": 8}).run_id == run_id
    tracker.flush()
    assert client.get_run(run_id).data.params == {"lr": "0.01", "units_0": "8"}


def test_a_trial_whose_close_a_kill_cut_before_its_end_is_ended_when_the_search_resumes(tmp_path):
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment = client.create_experiment("e", artifact_location=(tmp_path / "a").as_uri())
    parent = client.create_run(experiment).info.run_id
    runs = {}
    for trial_id, status in [("t1", "completed"), ("t2", "failed"), ("t3", "running")]:
        # a close's last batch tagged the trial ended, then the kill came before set_terminated
        runs[trial_id] = client.create_run(experiment, tags={"mlflow.parentRunId": parent,
                                                             "hpsearch.trial_id": trial_id,
                                                             "hpsearch.status": status}).info.run_id
    tracker = TrialTracker.resume(LocalStore(client=client), experiment, parent, max_epochs=2)
    assert client.get_run(runs["t1"]).info.status == "FINISHED"
    assert client.get_run(runs["t2"]).info.status == "FAILED"
    assert client.get_run(runs["t3"]).info.status == "RUNNING"  # Ray Tune resumes it
    assert [tracker.records[t].status for t in ("t1", "t2", "t3")] == ["completed", "failed", "running"]


def test_a_checkpoint_that_rays_snapshot_names_but_a_kill_left_deleted_is_brought_back(tmp_path):
    from ray import tune

    from hpsearch.data.sources import load_dataset
    from hpsearch.execution.restore import bring_back_checkpoint
    from hpsearch.space import Search
    from hpsearch.training.fit import TrialConfig, fit

    # The snapshot names checkpoint 1; Ray deleted it when checkpoint 2 came; checkpoint 3 was being copied when
    # the kill came (cut short). Checkpoint 2 is the newest whole one.
    trial_dir = tmp_path / "trial_x"
    for epoch in (2, 3):
        directory = trial_dir / f"checkpoint_00000{epoch - 1}"
        directory.mkdir(parents=True)
        fit(TrialConfig(hidden_sizes=(8,), max_epochs=epoch), load_dataset(Search(data="sklearn:iris"), tmp_path),
            lambda metrics, save, directory=directory: save(directory))
    (trial_dir / "checkpoint_000001").rename(trial_dir / "checkpoint_000003")
    state = trial_dir / "checkpoint_000003" / "train_state.pt"
    state.write_bytes(state.read_bytes()[:100])

    bring_back_checkpoint(tune.Checkpoint(str(trial_dir / "checkpoint_000001")))
    brought_back = trial_dir / "checkpoint_000001"
    assert {p.name: p.read_bytes() for p in brought_back.iterdir()} == \
        {p.name: p.read_bytes() for p in (trial_dir / "checkpoint_000002").iterdir()}


def test_a_trial_ended_in_mlflow_but_running_in_rays_snapshot_is_not_counted_or_shown_twice(tmp_path):
    import io

    from ray.tune.experiment import Trial

    from hpsearch.execution.progress import Progress
    from hpsearch.execution.ray_tune import tracking_callback

    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment = client.create_experiment("e", artifact_location=(tmp_path / "a").as_uri())
    parent = client.create_run(experiment).info.run_id
    client.create_run(experiment, tags={"mlflow.parentRunId": parent, "hpsearch.trial_id": "t1",
                                        "hpsearch.status": "completed"})
    tracker = TrialTracker.resume(LocalStore(client=client), experiment, parent, max_epochs=2)
    out = io.StringIO()
    progress = Progress(stream=out, live=False)
    settings = {"max_epochs": 2, "seed": 0, "metric": "val_loss", "mode": "min", "early_stopping_patience": None}
    callback = tracking_callback()(tracker, settings, 2, "val_loss", "min", progress)
    trial = Trial("ray_trial", config={"n_layers": 1, "units_0": 8, "lr": 0.01}, trial_id="t1", stub=True)

    # Ray's snapshot was saved before the trial's end: it runs the trial again from its last checkpoint
    callback.on_trial_start(0, [trial], trial)
    callback.on_trial_complete(0, [trial], trial)

    assert (progress.state.done, progress.state.running) == (1, 0)
    assert "completed after" not in out.getvalue()
    assert [r.info.status for r in client.search_runs([experiment])].count("FINISHED") == 1


def _killed_trial_resumed(tmp_path: Path, max_epochs: int):
    """A trial killed after 2 epochs in MLflow, its tracker resumed, and Ray Tune's tracking callback for it."""
    import io

    from ray.tune.experiment import Trial

    from hpsearch.execution.progress import Progress
    from hpsearch.execution.ray_tune import tracking_callback

    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment = client.create_experiment("e", artifact_location=(tmp_path / "a").as_uri())
    parent = client.create_run(experiment).info.run_id
    run_id = client.create_run(experiment, tags={"mlflow.parentRunId": parent, "hpsearch.trial_id": "t1",
                                                 "hpsearch.status": "killed"}).info.run_id
    for epoch in (1, 2):
        client.log_metric(run_id, "val_loss", 1.0 / epoch, step=epoch)
    client.log_metric(run_id, "epochs_trained", 2)
    client.set_terminated(run_id, "KILLED")
    tracker = TrialTracker.resume(LocalStore(client=client), experiment, parent, max_epochs=max_epochs)
    settings = {"max_epochs": max_epochs, "seed": 0, "metric": "val_loss", "mode": "min",
                "early_stopping_patience": None}
    callback = tracking_callback()(tracker, settings, 1, "val_loss", "min", Progress(stream=io.StringIO(), live=False))
    trial = Trial("ray_trial", config={"n_layers": 1, "units_0": 8, "lr": 0.01}, trial_id="t1", stub=True)
    return client, run_id, tracker, callback, trial


def test_a_resumed_trial_writes_the_epoch_of_its_checkpoint_that_an_interruption_kept_from_mlflow(tmp_path):
    """Ctrl-C while Ray Tune handled a trial's result: Ray saved the checkpoint and the result with it, MLflow
    never got that epoch. The trial resumes from that checkpoint with the next epoch: the missing one is written
    from Ray's last result."""
    client, run_id, tracker, callback, trial = _killed_trial_resumed(tmp_path, max_epochs=5)
    trial.run_metadata.last_result = {"epoch": 3, "val_loss": 0.3, "train_loss": 0.2}  # restored with its checkpoint

    callback.on_trial_start(0, [trial], trial)
    callback.on_trial_result(0, [trial], trial, {"epoch": 4, "val_loss": 0.25, "train_loss": 0.2})
    tracker.flush()
    assert [m.step for m in client.get_metric_history(run_id, "val_loss")] == [1, 2, 3, 4]


def test_a_resumed_trial_writes_every_epoch_of_the_report_an_interruption_kept_from_mlflow(tmp_path):
    """Ctrl-C while Ray Tune handled a report that carried epochs 3 to 5 (a trial reports its epochs a few at a
    time): MLflow never got them. The resumed trial writes all three from Ray's last result, and the epochs it
    trains again are not written twice."""
    from hpsearch.execution.trainable import EARLIER_KEY

    client, run_id, tracker, callback, trial = _killed_trial_resumed(tmp_path, max_epochs=8)
    earlier = [{"epoch": e, "val_loss": 1.0 / e, "train_loss": 0.2} for e in (3, 4)]
    trial.run_metadata.last_result = {"epoch": 5, "val_loss": 0.2, "train_loss": 0.2, EARLIER_KEY: earlier}

    callback.on_trial_start(0, [trial], trial)
    callback.on_trial_result(0, [trial], trial, {"epoch": 6, "val_loss": 0.15, "train_loss": 0.2,
                                                 EARLIER_KEY: [{"epoch": 5, "val_loss": 0.2, "train_loss": 0.2}]})
    tracker.flush()
    assert [m.step for m in client.get_metric_history(run_id, "val_loss")] == [1, 2, 3, 4, 5, 6]
