"""``hpsearch ui``: the MLflow UI on the project's tracking store, bound to this machine only by default.

A thin wrapper around ``mlflow ui`` that knows where hpsearch keeps its store (``mlruns/mlflow.db``), checks it
exists and that the port is free before starting, and prints the URL to open. One worker: the UI serves one
person looking at their searches.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from hpsearch.errors import TrackingError

__all__ = ["DEFAULT_HOST", "DEFAULT_PORT", "serve", "server_command", "store_uri", "wait_until_up"]

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 5000


def store_uri(tracking_uri: str | None) -> str:
    """The backend store to show: ``tracking_uri`` (or ``MLFLOW_TRACKING_URI``), or the local
    ``mlruns/mlflow.db``, which must exist."""
    from hpsearch.tracking import DEFAULT_STORE, default_tracking_uri, tracking_uri_from

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


def serve(tracking_uri: str | None, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT) -> int:
    """Run the MLflow UI in the foreground until it stops (Ctrl-C); returns its exit code."""
    backend = store_uri(tracking_uri)
    _check_port(host, port)
    url = f"http://{host}:{port}"
    print(f"MLflow UI on {backend}\n  open {url}\n(Ctrl-C stops it)", flush=True)
    process = subprocess.Popen(server_command(backend, host, port))
    try:
        return process.wait()
    except KeyboardInterrupt:
        process.terminate()
        process.wait(timeout=10)
        return 0


def wait_until_up(url: str, timeout_s: float = 60.0) -> None:
    """Wait until ``url`` answers HTTP 200 (the UI takes a few seconds to start)."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
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
