"""The processes a command starts end with it, however it ends: killed, stopped by a signal, or by Ctrl-C.

Every check runs the real command as a subprocess in a session of its own and watches the processes through
/proc (Linux), as an operator would with ``ps``.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import REPO, write_space
from tests.processes import alive, stat
from tests.serving import free_port

pytestmark = pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="watches processes through /proc")

ENV = {**os.environ, "PYTHONPATH": str(REPO)}
SLOW_SPACE = """
from sklearn.datasets import make_classification

def make_data():
    return make_classification(n_samples=20000, n_features=20, random_state=0)

search = Search(data=make_data, params={"layers": layers(1, 1, units=(16, 32)), "lr": loguniform(1e-3, 1e-2),
                "batch_size": 16}, num_samples=2, max_epochs=500, scheduler="fifo", experiment="slow")
"""
RAY_AGENTS = ("ray::DashboardAgent", "ray::RuntimeEnvAgent")


def _all_pids() -> list[int]:
    return [int(name) for name in os.listdir("/proc") if name.isdigit()]


def _descendants(root: int) -> set[int]:
    """Every living process below ``root``, and every process of its session (a child that left the tree)."""
    parents = {pid: fields for pid in _all_pids() if (fields := stat(pid)) is not None and fields[0] != "Z"}
    found, frontier = set(), {root}
    while frontier:
        frontier = {pid for pid, fields in parents.items() if int(fields[1]) in frontier} - found
        found |= frontier
    return found | {pid for pid, fields in parents.items() if int(fields[3]) == root and pid != root}


def _command(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()[:120]
    except OSError:
        return "?"


def _left_after(pids: set[int], seconds: float) -> dict[int, str]:
    """The processes among ``pids`` still alive ``seconds`` from now (returns as soon as none is)."""
    deadline = time.monotonic() + seconds
    while (living := {pid for pid in pids if alive(pid)}) and time.monotonic() < deadline:
        time.sleep(0.2)
    return {pid: _command(pid) for pid in living}


def _start(args: list[str], cwd: Path) -> tuple[subprocess.Popen, list[str]]:
    """``python -m hpsearch ARGS`` in a session of its own, as a terminal starts it (Ctrl-C, SIGTERM and SIGHUP at
    their defaults, even where the test runs under ``nohup``); its output lines are collected as they come."""
    process = subprocess.Popen([sys.executable, "-m", "hpsearch", *args], cwd=cwd, env=ENV, text=True,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True,
                               preexec_fn=_as_a_terminal_starts_it)
    lines: list[str] = []
    threading.Thread(target=lambda: lines.extend(process.stdout), daemon=True).start()
    return process, lines


def _as_a_terminal_starts_it() -> None:
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, signal.SIG_DFL)


def _wait_for(process: subprocess.Popen, lines: list[str], seen: Callable[[str], bool], timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not any(map(seen, list(lines))):
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            pytest.fail("never saw what was awaited:\n" + "".join(lines)[-3000:])
        time.sleep(0.1)


def _kill_all(pids: set[int]) -> None:
    for pid in pids:
        if alive(pid):
            os.kill(pid, signal.SIGKILL)


@pytest.mark.parametrize("executor", ["local", "ray"])
def test_no_process_of_a_search_is_alive_15_s_after_its_driver_is_killed(workdir: Path, executor: str):
    """The driver alone is killed (``kill -9 PID``), not its group: its helpers (the MLflow store's process, the
    figure drawer) and, on Ray, the Ray it started (GCS, raylet, workers, monitors) must notice and end by themselves.

    Ray's two agents (``ray::DashboardAgent``, ``ray::RuntimeEnvAgent``) are left out: they see their raylet die
    within 2 s, then spend 60 s trying to report it to the dead GCS before they exit (measured: 61 s, Ray 2.60;
    their logs say "Raylet is dead", then "SystemExit" a minute later). That wait is Ray's own, not settable
    through a public API; they do exit."""
    space = write_space(workdir, SLOW_SPACE)
    driver, lines = _start(["run", str(space), "--executor", executor, "--verbose"], workdir)
    # Trials train (the in-process executor prints a line per ended trial, Ray's per epoch): every helper is up.
    trials_run = (lambda line: " in experiment " in line) if executor == "local" else (lambda line: " epoch " in line)
    _wait_for(driver, lines, trials_run)
    time.sleep(1)
    helpers = _descendants(driver.pid)
    assert len(helpers) >= 2, "the store's process and the drawer"
    os.kill(driver.pid, signal.SIGKILL)
    driver.wait(timeout=10)
    watched = {pid for pid in helpers | _descendants(driver.pid) if not _command(pid).startswith(RAY_AGENTS)}
    left = _left_after(watched, 15)
    _kill_all(set(left) | helpers)
    assert not left, f"still running 15 s after the driver was killed: {left}"


def test_the_ui_stopped_by_a_signal_leaves_no_process_and_prints_at_most_one_line(workdir: Path):
    """SIGTERM (a process manager), SIGHUP (a closed terminal) to the ``hpsearch ui`` process; Ctrl-C as a
    terminal sends it: SIGINT to the whole foreground process group. Three UIs on one store, started together
    (each start is seconds of imports on 2 cores), each stopped its own way. Each says at once that it starts
    and keeps the terminal, and gives its URL once the URL answers."""
    from mlflow import MlflowClient

    (workdir / "mlruns").mkdir()
    MlflowClient(f"sqlite:///{workdir / 'mlruns' / 'mlflow.db'}").create_experiment("e")
    ports = {how: free_port() for how in ("SIGTERM", "SIGHUP", "Ctrl-C")}
    uis = {how: _start(["ui", "--port", str(port)], workdir) for how, port in ports.items()}
    servers: dict[str, set[int]] = {}
    try:
        for how, port in ports.items():
            ui, lines = uis[how]
            url = f"http://127.0.0.1:{port}"
            _wait_for(ui, lines, lambda line, url=url: line.startswith(f"MLflow UI ready: open {url}"), timeout=300)
            with urllib.request.urlopen(url, timeout=10) as response:  # the URL is printed once it answers
                assert response.status == 200
            assert lines[0].startswith("starting the MLflow UI") and "in this terminal until Ctrl-C" in lines[0]
            servers[how] = _descendants(ui.pid)
        time.sleep(1)  # the servers' start-up messages are printed
        before = {how: len(lines) for how, (_, lines) in uis.items()}
        for how, (ui, _) in uis.items():
            if how == "Ctrl-C":
                os.killpg(ui.pid, signal.SIGINT)
            else:
                ui.send_signal(getattr(signal, how))
        codes = {how: ui.wait(timeout=300) for how, (ui, _) in uis.items()}  # seconds; minutes on a busy machine
    finally:
        left = _left_after(set().union(*servers.values()), 5) if servers else []
        _kill_all(set(left) | {ui.pid for ui, _ in uis.values()} | set().union(*servers.values()))
    time.sleep(0.5)  # the last lines reach the readers
    assert codes == {how: 0 for how in ports} and not left, (codes, left)
    for how, (_, lines) in uis.items():
        assert len(servers[how]) >= 2, f"{how}: the MLflow server and its worker were seen"
        after = lines[before[how]:]
        assert len(after) <= 1, f"{how}: " + "".join(after)[-3000:]


def test_a_killed_ui_takes_its_mlflow_server_with_it(workdir: Path):
    """``kill -9`` of ``hpsearch ui`` (its server runs in a session of its own, out of Ctrl-C's way): the server and
    its worker end within seconds, and nothing keeps serving the store."""
    from mlflow import MlflowClient

    from hpsearch.tracking.ui import wait_until_up

    (workdir / "mlruns").mkdir()
    MlflowClient(f"sqlite:///{workdir / 'mlruns' / 'mlflow.db'}").create_experiment("e")
    port = free_port()
    ui, _ = _start(["ui", "--port", str(port)], workdir)
    server: set[int] = set()
    try:
        wait_until_up(f"http://127.0.0.1:{port}", timeout_s=180)
        server = _descendants(ui.pid)
        os.kill(ui.pid, signal.SIGKILL)
        ui.wait(timeout=30)
        left = _left_after(server, 30)
    finally:
        _kill_all(server | {ui.pid})
    assert len(server) >= 2, "the MLflow server and its worker were seen"
    assert not left, f"still serving 30 s after the ui was killed: {left}"
