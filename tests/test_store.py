"""The tracking store's own process: MLflow loads there, never in the driver, and nothing is lost on the way.

Each check runs as its own ``python`` process (as a user runs a search): the store's process is forked only
where no Ray runs, and the test process may hold the suite's Ray.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mlflow import MlflowClient

from hpsearch.tracking.store import LocalStore, Pending
from hpsearch.tracking.tracker import TrialTracker
from tests.conftest import REPO, SPACES
from tests.processes import alive, env_logging_imports, imports, living_children

CALLS = """
import json, os, sys
from hpsearch.tracking import tracker as tracking
from hpsearch.errors import TrackingError
from hpsearch.tracking.store import StoreProcess
from hpsearch.tracking.connection import experiment_id

def children():  # the living processes this one started (the store's process), read from /proc
    found = []
    for name in filter(str.isdigit, os.listdir("/proc")):
        try:
            fields = open(f"/proc/{name}/stat").read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[1] == str(os.getpid()) and fields[0] != "Z":
            found.append(int(name))
    return found

store = StoreProcess.start(sys.argv[1])
print(json.dumps({"pid": children()[0]}), flush=True)
uri = store.connect()
first = store.call(experiment_id, "exp", uri)
again = store.call(experiment_id, "exp", uri)
try:
    store.call(tracking.find_resumable_search, first, "exp")
    error = None
except TrackingError as err:
    error = str(err)
store.send(tracking.find_resumable_search, first, "exp")  # fails in the store: raised by the next call
try:
    store.call(experiment_id, "exp", uri)
    sent_error = None
except TrackingError as err:
    sent_error = str(err)
after = store.call(experiment_id, "exp", uri)  # reported once
other = store.submit(experiment_id, "other", uri)  # answers read later, after calls made since
failing = store.submit(tracking.find_resumable_search, first, "exp")
between = store.call(experiment_id, "exp", uri)
try:
    failing.result()
    submitted_error = None
except TrackingError as err:
    submitted_error = str(err)
submitted = [other.result(), other.result(), store.call(experiment_id, "other", uri)]
if len(sys.argv) > 2:  # stay, to be killed
    input()
store.close()
print(json.dumps({"uri": uri, "same_experiment": first == again == after == between, "error": error,
                  "sent_error": sent_error, "submitted_error": submitted_error,
                  "submitted_answered": len(set(submitted)) == 1 and submitted[0] != first,
                  "ended": children() == [], "mlflow": "mlflow" in sys.modules}))
"""


def _python(script: str, *args: str, cwd: Path, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", script, *args], cwd=cwd, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=timeout)


@pytest.mark.parametrize("executor", ["local", "ray"])
def test_a_search_tracks_every_trial_from_a_driver_that_never_loads_mlflow(workdir: Path, executor: str):
    """MLflow loads in a process the driver forks, never in the driver; on Ray too (Tune's usage statistics would
    import MLflow's integration into the driver). The Ray the search started is ended before the search returns:
    none of its processes is left when the command prints the search's end."""
    log = workdir / "imports.log"
    driver = subprocess.Popen(
        [sys.executable, "-m", "hpsearch", "run", str(SPACES / "reference.py"), "--num-samples", "3",
         "--max-epochs", "2", "--executor", executor, "--no-plots"],
        cwd=workdir, env=env_logging_imports(log, "mlflow", PYTHONUNBUFFERED="1"), text=True,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    output, ray_left = [], None
    for line in driver.stdout:
        output.append(line)
        if "search finished in" in line:  # printed once run_search has returned
            ray_left = {pid: name for pid, name in living_children(driver.pid).items()
                        if name in ("gcs_server", "raylet")}
    assert driver.wait(timeout=300) == 0, "".join(output)[-3000:]
    mlflow_loaded_by = [(pid, ppid) for pid, ppid, name in imports(log) if name == "mlflow"]
    assert driver.pid not in {pid for pid, _ in mlflow_loaded_by}
    assert any(ppid == driver.pid for _, ppid in mlflow_loaded_by)  # the store's process, forked by the driver
    assert ray_left == {}
    client = MlflowClient(f"sqlite:///{workdir / 'mlruns' / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("reference").experiment_id])
    trials = [r for r in runs if r.data.tags.get("hpsearch.kind") == "trial"]
    assert len(trials) == 3 and all(r.info.status == "FINISHED" for r in trials)
    assert all(r.data.params["lr"] and "val_loss" in r.data.metrics for r in trials)
    assert all(client.list_artifacts(r.info.run_id, "model") for r in trials)


def test_the_store_process_answers_in_order_and_its_errors_reach_the_driver_for_sent_and_submitted_calls(
        workdir: Path):
    result = _python(CALLS, f"sqlite:///{workdir / 'store.db'}", cwd=workdir)
    assert result.returncode == 0, result.stderr[-3000:]
    answer = json.loads(result.stdout.strip().splitlines()[-1])
    assert answer["same_experiment"] and answer["ended"] and not answer["mlflow"]
    assert answer["error"] == "experiment 'exp' has no search to resume; run it without --resume"
    assert answer["sent_error"] == answer["submitted_error"] == answer["error"]
    assert answer["submitted_answered"]


def test_the_store_process_ends_when_the_driver_is_killed(workdir: Path):
    driver = subprocess.Popen([sys.executable, "-c", CALLS, f"sqlite:///{workdir / 'store.db'}", "stay"],
                              cwd=workdir, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                              env={**os.environ, "PYTHONPATH": str(REPO)})
    child = json.loads(driver.stdout.readline())["pid"]
    time.sleep(1)
    driver.send_signal(signal.SIGKILL)
    driver.wait(timeout=30)
    deadline = time.monotonic() + 30
    while alive(child) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not alive(child)


def test_a_trial_whose_run_id_wait_ctrl_c_cut_still_gets_its_run_id_when_asked_again(tmp_path: Path):
    """A Ctrl-C can land while the driver waits for a trial's run id: the abort that follows needs that id."""
    class SlowStore(LocalStore):  # answers a submitted call only on the second read, as if cut by Ctrl-C once
        def submit(self, fn, *args, **kwargs):
            value, reads = self.call(fn, *args, **kwargs), []

            def read():
                reads.append(1)
                if len(reads) == 1:
                    raise KeyboardInterrupt
                return value

            return Pending(read)

    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment = client.create_experiment("e", artifact_location=(tmp_path / "a").as_uri())
    parent = client.create_run(experiment).info.run_id
    tracker = TrialTracker(SlowStore(client=client), experiment, parent, max_epochs=2)
    assert tracker.trial_started("t1", {"lr": 0.1}).run_id == ""
    with pytest.raises(KeyboardInterrupt):
        tracker.record("t1")
    run_id = tracker.record("t1").run_id
    tracker.close_open_runs()
    assert client.get_run(run_id).info.status == "KILLED"
    assert client.get_run(run_id).data.params == {"lr": "0.1"}  # written with the run's last batch


FAILING_CALLS = """
import json, sys, traceback
from hpsearch.tracking import tracker as tracking
from hpsearch.tracking.store import StoreProcess
from hpsearch.tracking.connection import experiment_id

store = StoreProcess.start(sys.argv[1])
uri = store.connect()
experiment = store.call(experiment_id, "exp", uri)
shown = {}
try:  # a run id that does not exist: MLflow raises in the store's process
    store.call(tracking.log_test_metrics, "0123456789abcdef0123456789abcdef", {"test_loss": 1.0})
except Exception as err:
    shown["called"] = "".join(traceback.format_exception(err))
store.send(tracking.log_test_metrics, "fedcba9876543210fedcba9876543210", {"test_loss": 1.0})
try:  # the sent call's error arrives with this call's answer
    store.call(experiment_id, "exp", uri)
except Exception as err:
    shown["sent"] = "".join(traceback.format_exception(err))
shown["after"] = store.call(experiment_id, "exp", uri) == experiment
store.close()
print(json.dumps(shown))
"""


def test_an_error_in_the_store_process_shows_its_own_traceback_and_the_call_even_when_reported_later(
        workdir: Path):
    result = _python(FAILING_CALLS, f"sqlite:///{workdir / 'store.db'}", cwd=workdir)
    assert result.returncode == 0, result.stderr[-3000:]
    shown = json.loads(result.stdout.strip().splitlines()[-1])
    assert shown["after"], "a failed call does not stop the store"
    for key, run_id in (("called", "0123456789abcdef0123456789abcdef"), ("sent", "fedcba9876543210fedcba9876543210")):
        text = shown[key]
        assert f"hpsearch.tracking.tracker.log_test_metrics('{run_id}'" in text, text
        assert "tracker.py" in text and "in log_test_metrics" in text, "the store process's own traceback"
    assert "sent earlier without waiting" in shown["sent"] and "sent earlier" not in shown["called"]


def test_a_trial_is_written_without_the_driver_waiting_for_its_run_id_in_as_few_mlflow_calls_as_its_data_allow(
        tmp_path: Path):
    """While the trials run, the driver never waits on the store: a trial's writes name its run by the trial
    until its id is back. A trial shorter than the flush interval costs MLflow a run, its model files, one
    ``log_batch`` and its end."""
    reads = []

    class UnansweredStore(LocalStore):  # the store runs each call at once, but its answers come back late
        def submit(self, fn, *args, **kwargs):
            value = self.call(fn, *args, **kwargs)
            return Pending(lambda: reads.append(fn.__name__) or value)

    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment = client.create_experiment("e", artifact_location=(tmp_path / "a").as_uri())
    parent = client.create_run(experiment).info.run_id
    model = tmp_path / "model"
    model.mkdir()
    (model / "model.pt").write_bytes(b"weights")
    (model / "model.json").write_text("{}")
    calls = []
    for name in ("create_run", "log_batch", "log_artifact", "log_artifacts", "set_terminated", "set_tag",
                 "log_metric", "log_param", "update_run", "log_text"):
        real = getattr(client, name)
        setattr(client, name, lambda *a, _real=real, _name=name, **k: calls.append(_name) or _real(*a, **k))
    tracker = TrialTracker(UnansweredStore(client=client), experiment, parent, max_epochs=2)
    tracker.trial_started("t1", {"lr": 0.1})
    for epoch in (1, 2):
        tracker.epoch_reported("t1", {"epoch": epoch, "train_loss": 0.5, "val_loss": 0.4 / epoch})
    tracker.trial_ended("t1", model_dir=str(model))
    assert reads == []
    assert sorted(calls) == sorted(["create_run", "log_artifact", "log_artifact", "log_batch", "set_terminated"])
    (record,) = tracker.finish()
    assert reads == ["_open_trial_run"]
    run = client.get_run(record.run_id)
    assert run.info.status == "FINISHED" and run.data.params == {"lr": "0.1"}
    assert run.data.tags["hpsearch.status"] == "completed"
    assert [(m.step, m.value) for m in client.get_metric_history(record.run_id, "val_loss")] == [(1, 0.4), (2, 0.2)]
    assert sorted(a.path for a in client.list_artifacts(record.run_id, "model")) == ["model/model.json",
                                                                                      "model/model.pt"]


UNREAD_ANSWERS = """
import sys
from hpsearch.tracking.store import StoreProcess

store = StoreProcess.start(sys.argv[1])
store.connect()
# thousands of submitted calls whose answers (1 kB each) the driver reads only at the end, between writes
pending = [store.submit(getattr, "no_such_attribute", str(i).rjust(1000)) for i in range(3000)]
store.send(getattr, "tracking_uri")
assert [int(p.result()) for p in pending] == list(range(3000))
store.close()
print("done")
"""


def test_the_driver_and_the_store_never_block_each_other_on_answers_the_driver_has_not_read_yet(workdir: Path):
    """A search reads its trials' run ids only at its end: their answers must not fill the pipe meanwhile."""
    result = _python(UNREAD_ANSWERS, f"sqlite:///{workdir / 'store.db'}", cwd=workdir, timeout=120)  # hangs if not
    assert result.returncode == 0 and result.stdout.strip() == "done", result.stderr[-3000:]


FAILING_WRITES = """
import sys
from hpsearch.tracking.store import StoreProcess

store = StoreProcess.start(sys.argv[1])
store.connect()
# writes that all fail, each failure a 5 kB answer (a tracking server gone: every queued write fails at once),
# then a call far larger than the pipe holds (a model), which the store must still read
for i in range(200):
    store.send(getattr, str(i).rjust(5000))
try:
    store.call(getattr, "tracking_uri", b"x" * 5_000_000)
except AttributeError:
    print("raised")
store.close()
print("done")
"""


def test_a_large_call_reaches_the_store_while_the_writes_before_it_all_fail(workdir: Path):
    """The store keeps reading calls while the driver has not read the failures of the writes before them."""
    result = _python(FAILING_WRITES, f"sqlite:///{workdir / 'store.db'}", cwd=workdir, timeout=120)  # hangs if not
    assert result.returncode == 0 and result.stdout.split() == ["raised", "done"], result.stderr[-3000:]
