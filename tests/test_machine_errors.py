"""Errors from the machine (a folder that cannot be written, a tracking server gone) are one line naming what
failed and where, with exit code 3; the runs are closed where the store can still be reached. A bug keeps its
traceback and exits with 70, never with 1 (which means that every trial failed)."""

from __future__ import annotations

import os
import re
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mlflow import MlflowClient

from hpsearch.cli.main import EXIT_INTERNAL_ERROR, EXIT_MACHINE_ERROR, main
from hpsearch.tracking.ui import wait_until_up
from tests.conftest import REPO, write_space
from tests.serving import free_port

SPACE = ("search = Search(data='sklearn:iris', params={'lr': loguniform(1e-3, 1e-1)}, num_samples=2, "
         "max_epochs=1, executor='local', experiment='machine')")


def _unwritable() -> Path:
    """A folder in which nobody, root included, can create anything: sysfs refuses mkdir (EPERM) to all."""
    folder = Path("/sys")
    try:
        (folder / "hpsearch-probe").mkdir()
    except OSError:
        return folder
    (folder / "hpsearch-probe").rmdir()
    pytest.skip("no folder here refuses writes to every user (/sys accepted one)")


def _one_line(err: str) -> str:
    assert "Traceback" not in err, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    return lines[0]


def test_a_search_where_the_tracking_store_cannot_be_created_is_one_line_and_exit_3(tmp_path, monkeypatch, capsys):
    space = write_space(tmp_path, SPACE)
    folder = _unwritable()
    monkeypatch.chdir(folder)

    assert main(["run", str(space), "-q"]) == EXIT_MACHINE_ERROR

    line = _one_line(capsys.readouterr().err)
    assert line.startswith(f"error: cannot create or open the tracking store {folder / 'mlruns'}: ")
    assert "Operation not permitted" in line or "Permission denied" in line or "Read-only" in line


def test_a_folder_that_refuses_a_trials_model_mid_search_is_one_line_exit_3_and_every_run_is_closed(
        workdir, capsys):
    space = write_space(workdir, SPACE)
    (workdir / "ray_results").symlink_to(_unwritable(), target_is_directory=True)

    assert main(["run", str(space), "-q"]) == EXIT_MACHINE_ERROR

    line = _one_line(capsys.readouterr().err)
    assert line.startswith(f"error: {_unwritable()}/machine-")
    assert line.endswith("(EPERM); in MLflow: 1 killed, the search failed")
    client = MlflowClient(f"sqlite:///{workdir / 'mlruns' / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("machine").experiment_id])
    statuses = {(r.data.tags.get("hpsearch.kind", "trial"), r.info.status) for r in runs}
    assert statuses == {("search", "FAILED"), ("trial", "KILLED")}


def test_a_tracking_server_that_goes_away_mid_search_is_one_line_and_exit_3(tmp_path):
    """A real ``mlflow server``, stopped once the search's first trial has ended."""
    server, uri = _mlflow_server(tmp_path)
    try:
        space = write_space(tmp_path, "search = Search(data='sklearn:digits', params={'lr': loguniform(1e-3, 1e-1)}, "
                                      "num_samples=30, max_epochs=10, scheduler='fifo', executor='local')")
        env = {**os.environ, "PYTHONPATH": str(REPO), "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0"}
        search = subprocess.Popen([sys.executable, "-m", "hpsearch", "run", str(space), "--no-plots",
                                   "--tracking-uri", uri], cwd=tmp_path, env=env,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for line in search.stdout:
            if "trial_000 completed" in line:
                break
        os.killpg(server.pid, signal.SIGKILL)
        server.wait()
        _, err = search.communicate(timeout=120)
    finally:
        if server.poll() is None:
            os.killpg(server.pid, signal.SIGKILL)
        if "search" in locals() and search.poll() is None:
            search.kill()
    assert search.returncode == EXIT_MACHINE_ERROR, err[-3000:]
    line = _one_line(err)
    assert line.startswith(f"error: the tracking store {uri} failed: ")
    assert "Connection" in line  # refused, or reset when the server died in the middle of a request


def test_a_tracking_server_that_goes_away_is_said_within_seconds_retried_as_mlflow_is_told_and_the_trials_kept(
        tmp_path):
    """MLflow's own retry settings are honoured (here a shorter backoff) and said, with how long they last."""
    server, uri = _mlflow_server(tmp_path)
    try:
        # trials of a tenth of a second, many more than run before the server goes away: it goes away mid-search
        space = write_space(tmp_path, "search = Search(data='sklearn:digits', params={'lr': loguniform(1e-3, 1e-1)}, "
                                      "num_samples=1000, max_epochs=10, scheduler='fifo', executor='local', "
                                      "experiment='gone')")
        env = {key: value for key, value in os.environ.items() if not key.startswith("MLFLOW_HTTP_REQUEST")}
        env |= {"PYTHONPATH": str(REPO), "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
                "MLFLOW_HTTP_REQUEST_BACKOFF_JITTER": "0"}
        search = subprocess.Popen([sys.executable, "-m", "hpsearch", "run", str(space), "--no-plots",
                                   "--tracking-uri", uri], cwd=tmp_path, env=env,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for line in search.stdout:
            if "trial_001 completed" in line:
                break
        _wait_for_finished_runs(MlflowClient(uri), "gone", 2)
        # stopped as a service is (a request being answered ends first: a response cut in the middle fails at
        # once, as MLflow retries no half-read answer)
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=60)
        killed = time.monotonic()
        said = search.stderr.readline() if select.select([search.stderr], [], [], 60)[0] else ""
        said_after_s = time.monotonic() - killed
        _, err = search.communicate(timeout=120)
        ended_after_s = time.monotonic() - killed
    finally:
        if server.poll() is None:
            os.killpg(server.pid, signal.SIGKILL)
        if "search" in locals() and search.poll() is None:
            search.kill()
    # refused; or reset, or closed without an answer, when the server died in the middle of a request
    assert re.fullmatch(
        re.escape(f"warning: the tracking server {uri} does not answer (") +
        "(Connection refused|Connection reset by peer|Remote end closed connection without response)"
        + re.escape("); MLflow tries again: 4 more tries over about 14 s, each waiting up to 30 s for an answer "
                    "(MLFLOW_HTTP_REQUEST_MAX_RETRIES=4, MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR=1, "
                    "MLFLOW_HTTP_REQUEST_TIMEOUT=30)"), said.strip()), said + err
    assert said_after_s < 30  # a second or two, on a busy machine
    assert search.returncode == EXIT_MACHINE_ERROR, err[-3000:]
    assert _one_line(err).startswith(f"error: the tracking store {uri} failed: ")
    assert ended_after_s < 14 + 60  # the retries, then the runs' closing tried once, not for as long again
    client = MlflowClient(f"sqlite:///{tmp_path / 's.db'}")  # the server's own database
    runs = client.search_runs([client.get_experiment_by_name("gone").experiment_id])
    finished = {r.info.run_name for r in runs if r.info.status == "FINISHED"}
    assert {"trial_000", "trial_001"} <= finished  # what ended before the server went away is kept
    assert "search" not in {r.data.tags.get("hpsearch.kind") for r in runs if r.info.status == "FINISHED"}


def _wait_for_finished_runs(client: MlflowClient, experiment: str, count: int, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        runs = client.search_runs([client.get_experiment_by_name(experiment).experiment_id], "status = 'FINISHED'")
        if len(runs) >= count:
            return
        time.sleep(0.2)
    raise AssertionError(f"fewer than {count} finished runs in {experiment!r} after {timeout_s} s")


def test_a_bug_keeps_its_traceback_and_never_exits_with_the_code_for_every_trial_failed(
        workdir, monkeypatch, capsys):
    import hpsearch.space

    def a_bug(path):
        return {}["missing"]

    monkeypatch.setattr(hpsearch.space, "load_space", a_bug)
    assert main(["run", str(write_space(workdir, SPACE))]) == EXIT_INTERNAL_ERROR

    err = capsys.readouterr().err
    assert "Traceback" in err and "KeyError: 'missing'" in err
    assert "internal error in hpsearch (exit code 70)" in err


@pytest.fixture
def small_disk(tmp_path):
    """A 6 MB file system (tmpfs), mounted for the test: a disk that fills during a search. Needs root."""
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=6m", "tmpfs", str(disk)], capture_output=True,
                             text=True)
    if mounted.returncode != 0:
        pytest.skip(f"a small disk needs a tmpfs mounted here (root): {mounted.stderr.strip()}")
    yield disk
    subprocess.run(["umount", "-l", str(disk)], check=False)


@pytest.mark.e2e
@pytest.mark.parametrize("executor", ["local", "batched", "ray"])
def test_a_disk_that_fills_mid_search_is_one_line_exit_3_and_mlflow_holds_what_was_printed(
        executor, small_disk, workdir, request, capsys):
    if executor == "ray":
        request.getfixturevalue("ray_session")
    # The checkpoints and the MLflow artifacts on the small disk (the database beside the test): each trial's
    # model takes 1.2 MB, its checkpoint 3.6 MB, so the disk fills after a trial or two.
    for folder in ("ray_results", "artifacts"):
        (small_disk / folder).mkdir()
    (workdir / "mlruns").mkdir()
    (workdir / "ray_results").symlink_to(small_disk / "ray_results")
    (workdir / "mlruns" / "artifacts").symlink_to(small_disk / "artifacts")
    space = write_space(workdir, "search = Search(data='sklearn:digits', params={'lr': loguniform(1e-3, 1e-1), "
                                 "'layers': [512, 512]}, num_samples=12, max_epochs=1, scheduler='fifo', "
                                 "experiment='full')")

    assert main(["run", str(space), "--no-plots", "--executor", executor]) == EXIT_MACHINE_ERROR

    out, err = capsys.readouterr()
    line = _one_line(err)
    assert line.startswith("error: ") and "No space left on device" in line and "(ENOSPC)" in line, line
    client = MlflowClient(f"sqlite:///{workdir / 'mlruns' / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("full").experiment_id])
    search_run = next(r for r in runs if r.data.tags.get("hpsearch.kind") == "search")
    trials = {r.info.run_name: r for r in runs if r is not search_run}
    assert search_run.info.status == "FAILED" and all(r.info.status != "RUNNING" for r in trials.values())
    held = {name: run.data.tags["hpsearch.status"] for name, run in trials.items()}
    shown = dict(re.findall(r"^(trial_\d+) (completed|stopped|failed) ", out, re.MULTILINE))
    lost = sorted(name for name in shown if held[name] == "killed")  # its end could not be written: said so
    statuses = list(held.values())
    said = [*(f"{statuses.count(s)} {s}" for s in sorted(set(statuses))),
            *([f"{', '.join(lost)} could not be saved"] if lost else []), "the search failed"]
    assert line.endswith(f"; in MLflow: {', '.join(said)}"), line
    assert {name: held[name] for name in shown if name not in lost} == {n: s for n, s in shown.items() if n not in lost}


def _mlflow_server(folder: Path) -> tuple[subprocess.Popen, str]:
    """A real ``mlflow server`` on a free port, in a session of its own, and its URI once it answers."""
    port = free_port()
    uri = f"http://127.0.0.1:{port}"
    server = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", f"sqlite:///{folder / 's.db'}",
         "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
        cwd=folder, env={**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"},
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        wait_until_up(f"{uri}/health", timeout_s=90)
    except BaseException:
        os.killpg(server.pid, signal.SIGKILL)
        raise
    return server, uri
