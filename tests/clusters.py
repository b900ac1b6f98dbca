"""Helpers for the cluster tests: free ports on 127.0.0.1 and processes that are always stopped, by pid."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Processes:
    """Processes a test starts, each in its own process group, stopped in reverse order by :meth:`stop_all`.

    A process group is named by the pid of the process we started, so stopping it reaches that process and the
    children it did not detach (Ray's raylet, GCS, ...), and nothing else on the machine.
    """

    def __init__(self, logs: Path) -> None:
        self.logs = logs
        self.started: list[subprocess.Popen] = []

    def start(self, name: str, argv: Sequence[str], env: dict[str, str], cwd: Path | None = None,
              grace_s: float = 5) -> subprocess.Popen:
        """Start ``argv``; at the end it gets SIGTERM, then ``grace_s`` seconds, then SIGKILL (its whole group)."""
        log = open(self.logs / f"{name}.log", "w")  # noqa: SIM115 - closed with the process, in stop_all
        proc = subprocess.Popen(list(argv), env=env, cwd=cwd, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
        proc.log = log  # type: ignore[attr-defined]
        proc.grace_s = grace_s  # type: ignore[attr-defined]
        self.started.append(proc)
        return proc

    def log(self, name: str) -> str:
        path = self.logs / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def stop_all(self) -> None:
        for proc in reversed(self.started):
            _stop(proc, proc.grace_s)  # type: ignore[attr-defined]
            proc.log.close()  # type: ignore[attr-defined]
        self.started.clear()


def _stop(proc: subprocess.Popen, grace_s: float) -> None:
    for sig, wait_s in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 5)):
        if proc.poll() is None:
            _signal_group(proc.pid, sig)
            try:
                proc.wait(wait_s)
            except subprocess.TimeoutExpired:
                continue
        _signal_group(proc.pid, signal.SIGKILL)  # what the leader left behind in its group
        return


def _signal_group(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def wait_until(check: Callable[[], bool], timeout_s: float, what: str, logs: Callable[[], str] = str,
               proc: subprocess.Popen | None = None) -> None:
    """Poll ``check`` until it holds; fail at once, with the log, when ``proc`` (which should provide it) exits."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():
            return
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"{what}: the process exited with {proc.returncode}\n{logs()[-3000:]}")
        time.sleep(0.5)
    raise AssertionError(f"timed out after {timeout_s:.0f}s waiting for {what}\n{logs()[-3000:]}")


def http_ok(url: str, token: str | None = None) -> bool:
    headers = {"Authorization": f"Bearer {token.strip()}"} if token else {}
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=2) as response:
            return response.status == 200
    except OSError:
        return False
