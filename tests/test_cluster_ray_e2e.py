"""End-to-end on a real two-node Ray cluster on this machine, with a real MLflow tracking server.

Two Ray nodes (``ray start --head`` and ``ray start --address``, 1 CPU each, token authentication with a token of
their own) and an ``mlflow server`` (SQLite backend, artifacts served through the server), all addressed on the
loopback interface only: MLflow on 127.0.0.1; the Ray nodes on 127.0.0.2 and 127.0.0.3, because Ray replaces
127.0.0.1 by the machine's network address (``resolve_ip_for_localhost``), and two loopback addresses also give
the two nodes different IPs. Everything uses folders of its own (a private Ray temp dir, so no other Ray on the
machine finds this cluster) and is stopped by pid at the end. Searches run in subprocesses, as users run them.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from mlflow import MlflowClient

from tests.clusters import Processes, free_port, http_ok, wait_until
from tests.conftest import REPO, SPACES

pytestmark = pytest.mark.e2e

SPACE = """
from hpsearch import Search, choice, loguniform

search = Search(
    data="csv:data/churn.csv",  # travels with the job: the space file's folder is its working directory
    target="churned",
    params={"layers": choice([[8], [16]]), "lr": loguniform(1e-3, 1e-1)},
    num_samples=2, max_epochs=1, scheduler="fifo", searcher="random",
    resources={"cpu": 1},
)
"""


@dataclass
class RayCluster:
    gcs_address: str
    dashboard_url: str
    tracking_uri: str
    env: dict[str, str]
    root: Path


@pytest.fixture(scope="module")
def ray_cluster() -> Iterator[RayCluster]:
    if shutil.which("ray") is None or shutil.which("mlflow") is None:
        pytest.skip("needs the `ray` and `mlflow` commands (pip install -e .)")
    root = Path(tempfile.mkdtemp(prefix="hp6ray-", dir="/tmp"))  # short: Ray's socket paths live below it
    token = root / "auth_token"
    token.write_text(secrets.token_hex(32))
    token.chmod(0o600)
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    env.update(PYTHONPATH=str(REPO), RAY_AUTH_MODE="token", RAY_AUTH_TOKEN_PATH=str(token),
               TUNE_DISABLE_AUTO_CALLBACK_LOGGERS="1", RAY_USAGE_STATS_ENABLED="0")
    gcs_port, dashboard_port, mlflow_port = free_port(), free_port(), free_port()
    procs = Processes(root)
    try:
        mlflow = procs.start("mlflow", ["mlflow", "server", "--host", "127.0.0.1", "--port", str(mlflow_port),
                                        "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}",
                                        "--artifacts-destination", str(root / "artifacts"), "--workers", "1"],
                             env, cwd=root)
        # A temp dir per node (runtime envs are unpacked there) and free ports, not Ray's defaults, which
        # another Ray on this machine may hold. `ray start --block` seldom exits on SIGTERM within seconds:
        # a short grace, then its whole process group is killed.
        common = ["--block", "--num-cpus=1", "--num-gpus=0", f"--dashboard-agent-listen-port={free_port()}"]
        head = procs.start("head", ["ray", "start", "--head", "--node-ip-address=127.0.0.2", f"--port={gcs_port}",
                                    "--dashboard-host=127.0.0.2", f"--dashboard-port={dashboard_port}",
                                    "--include-dashboard=true", f"--temp-dir={root}/head", *common], env, grace_s=2)
        dashboard = f"http://127.0.0.2:{dashboard_port}"
        wait_until(lambda: http_ok(f"{dashboard}/api/version", token.read_text()), 90, "the Ray head's dashboard",
                   lambda: procs.log("head"), head)
        common[-1] = f"--dashboard-agent-listen-port={free_port()}"
        worker = procs.start("worker", ["ray", "start", f"--address=127.0.0.2:{gcs_port}",
                                        "--node-ip-address=127.0.0.3", f"--temp-dir={root}/worker", *common],
                             env, grace_s=2)
        wait_until(lambda: _alive_nodes(f"127.0.0.2:{gcs_port}", env) == 2, 90, "the second Ray node",
                   lambda: procs.log("worker"), worker)
        wait_until(lambda: http_ok(f"http://127.0.0.1:{mlflow_port}/health"), 90, "the MLflow server",
                   lambda: procs.log("mlflow"), mlflow)
        yield RayCluster(f"127.0.0.2:{gcs_port}", dashboard, f"http://127.0.0.1:{mlflow_port}", env, root)
    finally:
        procs.stop_all()
        shutil.rmtree(root, ignore_errors=True)


def _alive_nodes(address: str, env: dict[str, str]) -> int:
    code = "import ray; ray.init(address=%r, logging_level='ERROR'); print(sum(n['Alive'] for n in ray.nodes()))"
    result = subprocess.run([sys.executable, "-c", code % address], env=env, capture_output=True, text=True,
                            timeout=60, check=False)
    return int(result.stdout.strip().splitlines()[-1]) if result.returncode == 0 else 0


def _hpsearch(args: list[str], env: dict[str, str], cwd: Path, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "hpsearch", *args], env=env, cwd=cwd, capture_output=True,
                          text=True, timeout=timeout, check=False)


def _job_folder(root: Path) -> Path:
    folder = root / "job"
    (folder / "data").mkdir(parents=True, exist_ok=True)
    shutil.copy(SPACES / "data" / "churn.csv", folder / "data" / "churn.csv")
    (folder / "space.py").write_text(SPACE)
    return folder


def test_a_search_submitted_through_the_jobs_api_uses_both_nodes_and_tracks_on_the_server(ray_cluster, tmp_path):
    folder = _job_folder(ray_cluster.root)
    result = _hpsearch(["submit", str(folder / "space.py"), "--ray-address", ray_cluster.dashboard_url, "--wait",
                        "--tracking-uri", ray_cluster.tracking_uri, "--storage", str(ray_cluster.root / "storage"),
                        "--experiment", "jobs"], ray_cluster.env, tmp_path)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    assert "submitted Ray job" in result.stdout and "SUCCEEDED" in result.stdout
    assert "search finished" in result.stdout  # the job's own output, streamed back

    client = MlflowClient(ray_cluster.tracking_uri)
    experiment = client.get_experiment_by_name("jobs")
    runs = client.search_runs([experiment.experiment_id])
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    parents = [r for r in runs if r.data.tags.get("hpsearch.kind") == "search"]
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    assert len(children) == 2  # two trials at once, one per node: each node has 1 CPU, each trial needs 1
    assert all(c.info.status == "FINISHED" and c.data.tags["hpsearch.status"] == "completed" for c in children)
    nodes = {c.data.tags["hpsearch.node"] for c in children}
    node_ids = {c.data.tags["hpsearch.node_id"] for c in children}
    assert len(nodes) == 2 and len(node_ids) == 2, nodes
    assert {c.data.tags["hpsearch.node_ip"] for c in children} == {"127.0.0.2", "127.0.0.3"}
    best = parents[0].data.tags["hpsearch.best_run_id"]
    assert {a.path for a in client.list_artifacts(best, "model")} == {"model/model.pt", "model/model.json"}
    assert not (tmp_path / "mlruns").exists()


def test_a_job_on_several_nodes_without_shared_storage_stops_before_writing_and_exits_2(ray_cluster, tmp_path):
    """The multi-node check runs in the job's driver; `submit --wait` streams its one line and its exit code."""
    folder = _job_folder(ray_cluster.root)
    result = _hpsearch(["submit", str(folder / "space.py"), "--ray-address", ray_cluster.dashboard_url, "--wait",
                        "--tracking-uri", ray_cluster.tracking_uri, "--experiment", "no-storage"],
                       ray_cluster.env, tmp_path)
    assert result.returncode == 2, result.stdout[-3000:] + result.stderr[-3000:]
    assert "the Ray cluster has 2 nodes, so the search needs --storage PATH_OR_URI" in result.stdout
    assert "FAILED (exit code 2)" in result.stdout
    assert MlflowClient(ray_cluster.tracking_uri).get_experiment_by_name("no-storage") is None
