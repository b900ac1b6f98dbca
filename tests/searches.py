"""Searches run as a user runs them, from outside: a real ``python -m hpsearch`` process in a session of its own,
its output read as it comes, signals sent to it, and its MLflow store read (read-only) while it runs."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import REPO

ENV = {**os.environ, "PYTHONPATH": str(REPO)}


class Command:
    """``python -m hpsearch ARGS`` running in ``workdir``, in a session of its own (as a terminal's job)."""

    def __init__(self, workdir: Path, *args: str) -> None:
        self.process = subprocess.Popen([sys.executable, "-m", "hpsearch", *args], cwd=workdir, env=ENV, text=True,
                                        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True,
                                        preexec_fn=ctrl_c_live)
        self.lines: list[str] = []
        self._reader = threading.Thread(target=lambda: self.lines.extend(self.process.stdout), daemon=True)
        self._reader.start()

    @property
    def pid(self) -> int:
        return self.process.pid

    def output(self) -> str:
        return "".join(self.lines)

    def wait(self, timeout: float = 300) -> int:
        code = self.process.wait(timeout=timeout)
        self._reader.join(timeout=10)
        return code

    def send(self, sig: int, *, group: bool = False) -> None:
        """``sig`` to the driver (``kill PID``), or to its whole process group (a terminal's Ctrl-C, SIGKILL of a
        machine, a batch system's end of job)."""
        if group:
            os.killpg(self.process.pid, sig)
        else:
            self.process.send_signal(sig)

    def wait_for(self, condition: Callable[[], bool], what: str, timeout: float = 240) -> None:
        """Poll ``condition`` until it holds (generous deadline: the machine may be busy)."""
        deadline = time.monotonic() + timeout
        while not condition():
            if self.process.poll() is not None:
                pytest.fail(f"the command ended before {what}:\n{self.output()[-3000:]}")
            if time.monotonic() > deadline:
                self.send(signal.SIGKILL, group=True)
                pytest.fail(f"timed out waiting for {what}:\n{self.output()[-3000:]}")
            time.sleep(0.05)


def ctrl_c_live() -> None:
    """Ctrl-C as in a terminal: tests started in the background of a non-interactive shell (``cmd &``) inherit
    SIGINT ignored, and so would the search, which keeps an ignored SIGINT ignored, as Unix commands do."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def hpsearch(workdir: Path, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run ``python -m hpsearch ARGS`` to its end."""
    return subprocess.run([sys.executable, "-m", "hpsearch", *args], cwd=workdir, env=ENV, text=True,
                          capture_output=True, timeout=timeout)


def printed_command(text: str, after: str) -> list[str]:
    """The command printed on the line after ``after`` (``resume with:``), as argv to run here."""
    import shlex

    lines = text.splitlines()
    index = next(i for i, line in enumerate(lines) if line.strip().startswith(after))
    argv = shlex.split(lines[index + 1])
    assert argv[:3] == ["python", "-m", "hpsearch"], argv
    return argv[3:]


def rows(workdir: Path, sql: str) -> list[tuple]:
    """Rows of the default store's database, read-only (while a search writes it)."""
    database = workdir / "mlruns" / "mlflow.db"
    if not database.exists():
        return []
    try:
        with sqlite3.connect(f"file:{database}?mode=ro", uri=True, timeout=5) as connection:
            return connection.execute(sql).fetchall()
    except sqlite3.OperationalError:  # tables not created yet
        return []


def children(workdir: Path) -> list[tuple[str, str]]:
    """``(run id, status)`` of every trial's run."""
    return rows(workdir, "SELECT r.run_uuid, r.status FROM runs r JOIN tags t ON t.run_uuid = r.run_uuid "
                         "WHERE t.key = 'mlflow.parentRunId' AND r.lifecycle_stage = 'active'")


def epochs_logged(workdir: Path) -> dict[str, int]:
    """Trial run id -> the number of val_loss values it has."""
    return dict(rows(workdir, "SELECT run_uuid, COUNT(*) FROM metrics WHERE key = 'val_loss' GROUP BY run_uuid"))


def mid_search(workdir: Path, finished: int = 1) -> bool:
    """At least ``finished`` trials have ended and a running one has trained an epoch."""
    runs = children(workdir)
    running = {run for run, status in runs if status == "RUNNING"}
    logged = epochs_logged(workdir)
    return sum(s == "FINISHED" for _, s in runs) >= finished and any(logged.get(run, 0) >= 1 for run in running)


def finished_histories(workdir: Path) -> dict[str, int]:
    """The trials that ended, with the epochs they logged."""
    done = {run for run, status in children(workdir) if status == "FINISHED"}
    return {run: n for run, n in epochs_logged(workdir).items() if run in done}
