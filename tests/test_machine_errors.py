"""Errors from the machine (a folder that cannot be written, a tracking server gone) are one line naming what
failed and where, with exit code 3; the runs are closed where the store can still be reached. A bug keeps its
traceback and exits with 70, never with 1 (which means that every trial failed)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow import MlflowClient

from hpsearch.cli.main import EXIT_INTERNAL_ERROR, EXIT_MACHINE_ERROR, main
from hpsearch.tracking.ui import wait_until_up
from tests.conftest import REPO, write_space

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
    assert line.startswith(f"error: {_unwritable()}/machine-") and line.endswith("(EPERM)")
    client = MlflowClient(f"sqlite:///{workdir / 'mlruns' / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("machine").experiment_id])
    statuses = {(r.data.tags.get("hpsearch.kind", "trial"), r.info.status) for r in runs}
    assert statuses == {("search", "FAILED"), ("trial", "KILLED")}


def test_a_tracking_server_that_goes_away_mid_search_is_one_line_and_exit_3(tmp_path):
    """A real ``mlflow server``, stopped once the search's first trial has ended."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", f"sqlite:///{tmp_path / 's.db'}",
         "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
        cwd=tmp_path, env={**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"},
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        wait_until_up(f"http://127.0.0.1:{port}/health", timeout_s=90)
        space = write_space(tmp_path, "search = Search(data='sklearn:digits', params={'lr': loguniform(1e-3, 1e-1)}, "
                                      "num_samples=30, max_epochs=10, scheduler='fifo', executor='local')")
        env = {**os.environ, "PYTHONPATH": str(REPO), "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0"}
        search = subprocess.Popen([sys.executable, "-m", "hpsearch", "run", str(space), "--no-plots",
                                   "--tracking-uri", f"http://127.0.0.1:{port}"], cwd=tmp_path, env=env,
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
    assert line.startswith(f"error: the tracking store http://127.0.0.1:{port} failed: ")
    assert "Connection" in line  # refused, or reset when the server died in the middle of a request


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
