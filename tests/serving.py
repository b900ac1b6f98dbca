"""``mlflow models serve`` for tests: started from the Python running the tests, asked over HTTP, stopped whole.

The programs (``mlflow``, ``uvicorn``) are found next to ``sys.executable``, so the suite needs no activated
virtual environment; PYTHONPATH is left out, so the served model runs the code it was saved with.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def served_model(model_uri: str, tracking_uri: str, folder: Path) -> Iterator[str]:
    """Serve ``model_uri`` on a free loopback port; yield its ``/invocations`` URL; stop the server's group."""
    port = free_port()
    programs = Path(sys.executable).parent
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}  # the model brings its code
    env |= {"MLFLOW_TRACKING_URI": tracking_uri, "PATH": f"{programs}{os.pathsep}{os.environ.get('PATH', '')}"}
    command = [str(programs / "mlflow"), "models", "serve", "-m", model_uri, "--env-manager", "local",
               "-h", "127.0.0.1", "-p", str(port)]
    log = folder / "serve.log"
    with log.open("w") as output:  # a file, not a pipe: a chatty server never blocks on a full pipe
        server = subprocess.Popen(command, cwd=folder, env=env, stdout=output, stderr=subprocess.STDOUT,
                                  start_new_session=True)
    try:
        wait_until_up(f"http://127.0.0.1:{port}/ping", server, log)
        yield f"http://127.0.0.1:{port}/invocations"
    finally:
        os.killpg(server.pid, signal.SIGTERM)  # the server and its workers: the group started above
        server.wait(timeout=30)


def ask(url: str, body: dict) -> list[dict]:
    """POST a scoring request (``dataframe_split``, ``dataframe_records``, ...); the predictions."""
    request = urllib.request.Request(url, json.dumps(body).encode(), {"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())["predictions"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until_up(url: str, server: subprocess.Popen, log: Path, timeout_s: float = 90) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise AssertionError(f"the server exited: {log.read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            time.sleep(0.5)
    raise AssertionError(f"no answer from {url} after {timeout_s}s")
