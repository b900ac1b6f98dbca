"""``hpsearch ui``: the MLflow UI on the project's tracking store, bound to this machine only by default.

A thin wrapper around ``mlflow ui`` that knows where hpsearch keeps its store (``mlruns/mlflow.db``), checks it
exists and that the port is free before starting, says it is starting (MLflow's UI takes seconds, on a busy
machine tens of seconds), and prints the URL to open once the server answers there. One worker: the UI serves one
person looking at their searches.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from hpsearch.errors import TrackingError

__all__ = ["DEFAULT_HOST", "DEFAULT_PORT", "runs_url", "serve", "server_command", "store_uri", "wait_until_up"]

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 5000


def store_uri(tracking_uri: str | None) -> str:
    """The backend store to show: ``tracking_uri`` (or ``MLFLOW_TRACKING_URI``), or the local
    ``mlruns/mlflow.db``, which must exist."""
    from hpsearch.tracking.connection import DEFAULT_STORE, default_tracking_uri, tracking_uri_from

    tracking_uri = tracking_uri_from(tracking_uri)
    if tracking_uri is not None:
        if tracking_uri.startswith(("http://", "https://")):
            raise TrackingError(f"{tracking_uri} is a tracking server with its own UI: open it in a browser")
        return tracking_uri
    if not (DEFAULT_STORE / "mlflow.db").is_file():
        raise TrackingError(f"no tracking store at {DEFAULT_STORE / 'mlflow.db'} in {Path.cwd()}; run a search here "
                            "first (python -m hpsearch run SPACE_FILE) or pass --tracking-uri")
    return default_tracking_uri()


def server_command(backend_uri: str, host: str, port: int) -> list[str]:
    return [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", backend_uri, "--host", host,
            "--port", str(port), "--workers", "1"]


def server_environment() -> dict[str, str]:
    """The server's environment: MLflow 3's job runner (GenAI evaluation jobs, which hpsearch never submits)
    off unless the user turned it on. It starts about six huey worker processes that slowed the UI's start
    several times over on 2 cores."""
    return {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", **os.environ}


def serve(tracking_uri: str | None, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT) -> int:
    """Run the MLflow UI in the foreground until it stops; returns its exit code (0 when stopped by a signal).

    The server (``mlflow ui``, its uvicorn worker and its job runner) runs in a session of its own, so that a
    terminal's Ctrl-C reaches only this process: MLflow's workers, each interrupted on its own, printed a
    KeyboardInterrupt traceback each (about 300 lines). Ctrl-C, SIGTERM (a process manager) and SIGHUP (a closed
    terminal) stop the whole server group; the server's own shutdown messages are not shown, one line is. A
    guard in that group (:func:`hpsearch.lifeline.guard`) ends it within seconds when this process is killed.
    """
    backend = store_uri(tracking_uri)
    _check_port(host, port)
    url = f"http://{host}:{port}"
    print(f"starting the MLflow UI on {backend} (it runs in this terminal until Ctrl-C) ...", flush=True)
    stop = threading.Event()  # set by this thread once a signal came: the server's shutdown lines are not shown
    stopped_by: list[int] = []  # the handler only appends: an Event set there could wait on a lock this thread holds
    previous = _on_stop_signals(stopped_by.append)
    try:
        # Under a guard that ends the server when this process is gone, even killed (hpsearch.lifeline.guard).
        guarded = [sys.executable, "-m", "hpsearch.lifeline", str(os.getpid()), *server_command(backend, host, port)]
        server = subprocess.Popen(guarded, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True,
                                  env=server_environment())
        echo = threading.Thread(target=_echo, args=(server.stdout, stop), daemon=True)
        echo.start()
        experiments = _experiments(backend)
        while server.poll() is None and not stopped_by and not _answers(url):
            time.sleep(0.2)
        if server.poll() is None and not stopped_by:  # the URL is said once it answers
            print(f"MLflow UI ready: open {url}", flush=True)
            for name, experiment_id in experiments:
                print(f"  experiment {name!r}, its searches and trials: {runs_url(url, experiment_id)}", flush=True)
            print("(it keeps this terminal; Ctrl-C stops it)", flush=True)
        while server.poll() is None and not stopped_by:
            time.sleep(0.2)
        if server.poll() is not None:  # it ended by itself (an error it printed)
            echo.join(timeout=5)
            return server.returncode
        stop.set()
        _stop_group(server)
        print(f"MLflow UI stopped ({signal.Signals(stopped_by[0]).name})", file=sys.stderr, flush=True)
        return 0
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def runs_url(url: str, experiment_id: str) -> str:
    """The MLflow 3 page that lists an experiment's runs (the searches; each one's trials under its row)."""
    return f"{url}/#/experiments/{experiment_id}/runs"


STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
STOP_GRACE_S = 10.0


def _on_stop_signals(handler: Callable[[int], object]) -> dict[int, Any]:
    """Call ``handler`` on Ctrl-C, SIGTERM and SIGHUP, except those this process was started ignoring (``nohup``,
    a background job of a shell): those stay ignored, as in any Unix command. Returns the previous handlers."""
    previous = {}
    for signum in STOP_SIGNALS:
        current = signal.getsignal(signum)
        if current is not signal.SIG_IGN:
            previous[signum] = signal.signal(signum, lambda number, _frame: handler(number))
    return previous


def _echo(stream: IO[bytes], stop: threading.Event) -> None:
    """The server's output, shown until the server is told to stop (its shutdown messages are not news)."""
    for line in iter(stream.readline, b""):
        if not stop.is_set():
            sys.stderr.buffer.write(line)
            sys.stderr.flush()


def _stop_group(server: subprocess.Popen) -> None:
    """SIGTERM to the server's whole process group; SIGKILL to what is left of it after a grace period."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(server.pid, signal.SIGTERM)
    deadline = time.monotonic() + STOP_GRACE_S
    while _group_alive(server) and time.monotonic() < deadline:
        time.sleep(0.1)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(server.pid, signal.SIGKILL)
    server.wait()


def _group_alive(server: subprocess.Popen) -> bool:
    server.poll()  # reaps the server once it has ended, so that only its workers count
    try:
        os.killpg(server.pid, 0)
    except ProcessLookupError:
        return False
    return True


def _experiments(backend: str, limit: int = 10) -> list[tuple[str, str]]:
    """The store's experiments, most recently updated first (MLflow's empty ``Default`` one left out)."""
    from mlflow import MlflowClient

    try:
        found = MlflowClient(tracking_uri=backend).search_experiments(max_results=limit,
                                                                      order_by=["last_update_time DESC"])
    except Exception:  # noqa: BLE001 - the server will say what is wrong with the store
        return []
    return [(e.name, e.experiment_id) for e in found if e.experiment_id != "0"]


def _answers(url: str) -> bool:
    """Whether the server answers at ``url`` (HTTP 200), now."""
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status == 200
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return False


def wait_until_up(url: str, timeout_s: float = 60.0) -> None:
    """Wait until ``url`` answers HTTP 200 (the UI takes a few seconds to start)."""
    deadline = time.monotonic() + timeout_s
    while not _answers(url):
        if time.monotonic() > deadline:
            raise TimeoutError(f"{url} did not answer within {timeout_s:.0f}s")
        time.sleep(0.3)


def _check_port(host: str, port: int) -> None:
    if not 1 <= port <= 65535:
        raise TrackingError(f"--port must be between 1 and 65535, but got {port}")
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        try:
            probe.bind((host, port))
        except OSError as err:
            raise TrackingError(f"cannot listen on {host}:{port} ({err.strerror}); "
                                "choose another with --port") from None
