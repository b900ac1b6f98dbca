"""Every executor survives a kill, Ctrl-C and SIGTERM: one process at a time runs a search, ``resume`` continues it
(its ended trials kept, its unfinished ones run again, nothing left RUNNING), and every command the product prints
after an interruption works.

Kills and signals go to real ``python -m hpsearch`` processes; what they leave is read from the real MLflow store.
"""

from __future__ import annotations

import json
import re
import shlex
import signal
import time
from pathlib import Path

import pytest
from mlflow import MlflowClient

from hpsearch.cli.main import main
from tests.conftest import write_space
from tests.searches import Command, children, finished_histories, hpsearch, mid_search, printed_command, rows

TRIALS = 6
# Epochs of half a second or more (3,500 batches of 16 rows; 1,750 took a quarter of a second on a fast day, and a
# trial ended before its first epoch reached MLflow), four of them: a trial's metrics reach MLflow once a second
# while it trains, so a watcher sees a trial at work, and a kill lands between two of its epochs.
SPACE = f"""
from sklearn.datasets import make_classification

def make_data():
    return make_classification(n_samples=80000, n_features=20, random_state=0)

search = Search(data=make_data, params={{"layers": layers(1, 2, units=(8, 32)), "lr": loguniform(1e-3, 1e-2),
                "batch_size": 16}}, num_samples={TRIALS}, max_epochs=4, scheduler="fifo", experiment="r")
"""


def _client(workdir: Path) -> MlflowClient:
    return MlflowClient(f"sqlite:///{workdir / 'mlruns' / 'mlflow.db'}")


def _runs(workdir: Path, experiment: str = "r") -> tuple[list, list]:
    client = _client(workdir)
    runs = client.search_runs([client.get_experiment_by_name(experiment).experiment_id], max_results=1000)
    return ([r for r in runs if r.data.tags.get("hpsearch.kind") == "search"],
            [r for r in runs if "mlflow.parentRunId" in r.data.tags])


def _check_resumed(workdir: Path, kept: dict[str, int], trials: int = TRIALS) -> None:
    """One parent, one run per trial named in order, every run closed, the trials ended before the kill untouched."""
    parents, trial_runs = _runs(workdir)
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    assert sorted(r.info.run_name for r in trial_runs) == [f"trial_{i:03d}" for i in range(trials)]
    assert len({r.data.tags["hpsearch.trial_id"] for r in trial_runs}) == trials
    assert {r.info.status for r in [*parents, *trial_runs]} == {"FINISHED"}, "nothing RUNNING or KILLED"
    for run in trial_runs:
        steps = [m.step for m in _client(workdir).get_metric_history(run.info.run_id, "val_loss")]
        assert steps == sorted(set(steps)), f"{run.info.run_name} logged an epoch twice: {steps}"
    logged = dict(rows(workdir, "SELECT run_uuid, COUNT(*) FROM metrics WHERE key = 'val_loss' GROUP BY run_uuid"))
    assert {run: logged[run] for run in kept} == kept, "a trial that had ended was run again"


def test_two_resumes_of_a_killed_local_search_at_once_run_it_once_and_refuse_the_other_naming_its_process(workdir):
    space = write_space(workdir, SPACE)
    search = Command(workdir, "run", str(space), "--executor", "local", "--no-plots")
    search.wait_for(lambda: mid_search(workdir, finished=2), "two ended trials and one training")
    search.send(signal.SIGKILL, group=True)  # as when the machine dies: nothing is closed
    search.wait()
    kept = finished_histories(workdir)

    first, second = Command(workdir, "resume", "r"), Command(workdir, "resume", "r")
    codes = sorted([first.wait(), second.wait()])

    assert codes == [0, 2], first.output()[-2000:] + second.output()[-2000:]
    refused = next(c for c in (first, second) if c.process.returncode == 2).output()
    assert "is running in process " in refused and " on host " in refused, refused
    assert "trial_" not in refused, "the refused resume ran no trial"
    _check_resumed(workdir, kept)
    versions = _client(workdir).search_model_versions("name = 'r'")
    assert len(versions) == 1


def test_a_killed_batched_search_resumes_keeping_its_ended_trials_and_training_its_unfinished_ones_again(workdir):
    space = write_space(workdir, SPACE.replace('scheduler="fifo"', 'scheduler=asha(grace_period=1)')
                        .replace("max_epochs=4", "max_epochs=6"))
    search = Command(workdir, "run", str(space), "--executor", "batched", "--no-plots")
    search.wait_for(lambda: mid_search(workdir, finished=1), "a trial pruned and others training")
    search.send(signal.SIGKILL, group=True)
    search.wait()
    kept = finished_histories(workdir)

    resumed = hpsearch(workdir, "resume", "r")

    assert resumed.returncode == 0, resumed.stdout[-2000:] + resumed.stderr[-2000:]
    assert "already ended and are kept" in resumed.stdout
    _check_resumed(workdir, kept)


def test_a_search_another_live_process_holds_is_refused_at_once_writing_nothing_until_its_lease_is_stale(
        workdir, capsys):
    space = write_space(workdir, "search = Search(data='sklearn:iris', num_samples=2, max_epochs=1, "
                                 "executor='local', experiment='held')")
    assert main(["run", str(space), "--no-plots"]) == 0
    client = _client(workdir)
    parent = client.search_runs([client.get_experiment_by_name("held").experiment_id],
                                "tags.`hpsearch.kind` = 'search'")[0].info.run_id
    long_ago = int(time.time() * 1000) - 10 * 60 * 1000
    # A process on another machine claimed the search ten minutes ago and renewed its lease just now.
    client.log_param(parent, "hpsearch.session.2", json.dumps({"host": "elsewhere", "pid": 4242,
                                                               "started_ms": long_ago, "asked": {}}))
    client.set_tag(parent, "hpsearch.lease", json.dumps({"session": 2, "renewed_ms": int(time.time() * 1000)}))
    before = client.get_run(parent).data
    capsys.readouterr()

    assert main(["resume", "held", "--num-samples", "3"]) == 2

    out, err = capsys.readouterr()
    assert "is running in process 4242 on host elsewhere" in err and len(err.strip().splitlines()) == 1, err
    assert "loading data" not in out
    after = client.get_run(parent)
    assert (after.data.params, after.data.tags, after.info.status) == (before.params, before.tags, "FINISHED")

    # Its lease not renewed for ten minutes: the holder is gone, and the search is taken over.
    client.set_tag(parent, "hpsearch.lease", json.dumps({"session": 2, "renewed_ms": long_ago}))
    assert main(["resume", "held", "--num-samples", "3"]) == 0
    assert len(_runs(workdir, "held")[1]) == 3


def test_a_search_killed_just_after_publishing_registers_its_model_once_when_resumed(workdir):
    space = write_space(workdir, "search = Search(data='sklearn:iris', num_samples=2, max_epochs=2, "
                                 "executor='local', experiment='published')")
    assert main(["run", str(space), "--no-plots"]) == 0
    client = _client(workdir)
    [parent] = client.search_runs([client.get_experiment_by_name("published").experiment_id],
                                  "tags.`hpsearch.kind` = 'search'")
    client.update_run(parent.info.run_id, "RUNNING")  # what a kill after publishing, before the search's end, leaves

    assert main(["resume", "published"]) == 0

    versions = client.search_model_versions("name = 'published'")
    assert [str(v.version) for v in versions] == ["1"]
    assert str(client.get_model_version_by_alias("published", "best").version) == "1"
    assert client.get_run(parent.info.run_id).info.status == "FINISHED"


@pytest.mark.parametrize(("executor", "how", "code"), [("local", "Ctrl-C", 130), ("batched", "SIGTERM", 143),
                                                         ("local", "SIGTERM to the group", 143)])
def test_a_search_stopped_by_ctrl_c_or_sigterm_closes_its_runs_and_prints_a_resume_command_that_works(
        workdir, executor, how, code):
    space = write_space(workdir, SPACE)
    search = Command(workdir, "run", str(space), "--executor", executor, "--no-plots")
    search.wait_for(lambda: mid_search(workdir, finished=0), "a trial training")
    if how == "Ctrl-C":
        search.send(signal.SIGINT, group=True)  # as a terminal sends it
    else:
        search.send(signal.SIGTERM, group=how.endswith("group"))  # kill PID; a batch system's end of job

    assert search.wait() == code, search.output()[-3000:]
    assert "Traceback" not in search.output()
    statuses = {status for _, status in children(workdir)} | {s for (s,) in rows(
        workdir, "SELECT status FROM runs r JOIN tags t ON t.run_uuid = r.run_uuid WHERE t.key = 'hpsearch.kind' "
                 "AND t.value = 'search'")}
    assert "RUNNING" not in statuses and "KILLED" in statuses
    kept = finished_histories(workdir)

    again = hpsearch(workdir, *printed_command(search.output(), "resume with:"))

    assert again.returncode == 0, again.stdout[-2000:] + again.stderr[-2000:]
    _check_resumed(workdir, kept)


def test_a_ray_search_stopped_by_sigterm_to_its_group_ends_as_ctrl_c_does(workdir):
    """A batch system ends a job with SIGTERM to every process, Ray's own included. Ray ends a driver that owns an
    object in its object store a tenth of a second after the raylet dies (exit code 1): the driver must own none
    (here about 1 run in 7 ended so while the data went through the store)."""
    space = write_space(workdir, SPACE)
    search = Command(workdir, "run", str(space), "--executor", "ray", "--no-plots", "-v")
    search.wait_for(lambda: " epoch " in search.output(), "a trial's epoch")
    started = time.monotonic()
    search.send(signal.SIGTERM, group=True)

    assert search.wait() == 143, search.output()[-3000:]
    assert time.monotonic() - started < 45, "Ray's shutdown waited for its killed processes"
    output = search.output()
    assert "*** SIGTERM received" not in output and "Traceback" not in output, output[-3000:]
    assert "resume with:\n  python -m hpsearch resume r\n" in output
    statuses = {status for _, status in children(workdir)}
    assert "RUNNING" not in statuses and "KILLED" in statuses


def test_a_resume_of_a_finished_search_says_how_to_ask_for_more_and_that_command_works(workdir, capsys):
    space = write_space(workdir, "search = Search(data='sklearn:iris', num_samples=2, max_epochs=1, "
                                 "executor='local', experiment='done')")
    assert main(["run", str(space), "--no-plots"]) == 0
    capsys.readouterr()

    assert main(["resume", "done"]) == 2

    err = capsys.readouterr().err
    hint = re.search(r"finished \(trials: 2\): nothing to resume; more trials: (python -m hpsearch [^;]+);", err)
    assert hint is not None, err
    argv = shlex.split(hint.group(1))
    assert argv[:3] == ["python", "-m", "hpsearch"]
    assert main(argv[3:]) == 0
    assert len(_runs(workdir, "done")[1]) == 4


def test_a_search_interrupted_before_it_started_writes_nothing_and_prints_a_command_that_starts_it(workdir):
    space = write_space(workdir, """
import time
from sklearn.datasets import load_iris

def slow_data():
    time.sleep(30)  # the command is interrupted while it loads the data
    return load_iris(return_X_y=True)

search = Search(data=slow_data, num_samples=1, max_epochs=1, executor="local", experiment="early")
""")
    search = Command(workdir, "run", str(space), "--executor", "local")
    search.wait_for(lambda: "loading data" in search.output(), "the data loading")
    search.send(signal.SIGINT, group=True)

    assert search.wait() == 130
    assert "interrupted before the search started: nothing was written" in search.output()
    assert not rows(workdir, "SELECT run_uuid FROM runs")
    argv = printed_command(search.output(), "interrupted before the search started")
    assert argv == ["run", str(space), "--executor", "local"]
