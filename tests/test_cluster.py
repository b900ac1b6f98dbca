"""The cluster commands' checks, the sbatch script and the KubeRay manifest, without starting a cluster.

The real clusters run in ``test_cluster_ray_e2e.py`` and ``test_cluster_slurm_e2e.py``.
"""

from __future__ import annotations

import os
import re
import shlex
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from mlflow import MlflowClient

from hpsearch.cli.main import main, parser
from hpsearch.cluster import checks, slurm
from hpsearch.errors import ClusterError
from hpsearch.tracking.store import LocalStore
from hpsearch.tracking.tracker import TrialTracker
from tests.conftest import REPO, SPACES, write_space

NODE = {"Alive": True, "Resources": {"CPU": 4.0}}


def test_one_node_needs_no_shared_storage_or_server():
    checks.check_cluster([NODE, {**NODE, "Alive": False}], {"cpu": 1, "gpu": 0}, None, None)


@pytest.mark.parametrize(("tracking_uri", "storage", "missing"), [
    (None, None, ["--storage", "--tracking-uri"]),
    ("sqlite:///mlruns/mlflow.db", "/shared/results", ["--tracking-uri"]),
    ("http://mlflow:5000", None, ["--storage"]),
])
def test_several_nodes_need_shared_storage_and_a_tracking_server(tracking_uri, storage, missing):
    with pytest.raises(ClusterError, match="the Ray cluster has 2 nodes") as info:
        checks.check_cluster([NODE, NODE], {"cpu": 1, "gpu": 0}, tracking_uri, storage)
    for flag in ("--storage", "--tracking-uri"):
        assert (flag in str(info.value)) == (flag in missing)


def test_several_nodes_with_shared_storage_and_a_server_pass():
    checks.check_cluster([NODE, NODE], {"cpu": 1, "gpu": 0}, "http://mlflow:5000", "s3://bucket/results")


def test_a_trial_larger_than_every_node_is_refused_even_if_the_cluster_total_fits():
    with pytest.raises(ClusterError, match=r"asks for 6 CPUs .* largest of the cluster's 2 nodes has 4"):
        checks.check_cluster([NODE, NODE], {"cpu": 6, "gpu": 0}, "http://mlflow:5000", "/shared")


def test_storage_uris_are_kept_and_local_folders_made_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert checks.storage_path("s3://bucket/x", Path("ray_results")) == "s3://bucket/x"
    assert checks.storage_path("shared", Path("ray_results")) == str(tmp_path / "shared")
    assert checks.storage_path(None, Path("ray_results")) == str(tmp_path / "ray_results")


def test_a_refused_token_is_explained_with_the_fix(monkeypatch):
    from ray.exceptions import AuthenticationError

    monkeypatch.delenv("RAY_AUTH_MODE", raising=False)
    try:  # the shape ray.init raises: a ConnectionError caused by Ray's AuthenticationError
        try:
            raise AuthenticationError("RPC error: InvalidAuthToken: Authentication token is missing or incorrect")
        except AuthenticationError as cause:
            raise ConnectionError("Failed to connect to Ray cluster at 10.0.0.1:6379") from cause
    except ConnectionError as err:
        message = str(checks.connection_error("10.0.0.1:6379", err))
    assert message.startswith("cannot connect to the Ray cluster at 10.0.0.1:6379: ")
    assert "RAY_AUTH_MODE=token" in message and "ray get-auth-token" in message


def test_the_node_tag_is_set_once_per_trial_from_the_reported_node(tmp_path):
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment = client.create_experiment("e", artifact_location=(tmp_path / "a").as_uri())
    parent = client.create_run(experiment).info.run_id
    tracker = TrialTracker(LocalStore(client=client), experiment, parent, max_epochs=2)
    run_id = tracker.trial_started("t1", {"lr": 0.1}).run_id
    tracker.node_reported("t1", "ab12cd34ef" * 5, hostname="gpu7", node_ip="10.0.0.7")
    tracker.node_reported("t1", "ff" * 25, hostname="other", node_ip="10.0.0.8")
    assert "hpsearch.node" not in client.get_run(run_id).data.tags  # written with the trial's next metrics
    tracker.flush()
    tags = client.get_run(run_id).data.tags
    assert tags["hpsearch.node"] == "gpu7/ab12cd34" and tags["hpsearch.node_ip"] == "10.0.0.7"
    assert tags["hpsearch.node_id"] == "ab12cd34ef" * 5


# ---------------------------------------------------------------------------------------------------- SLURM
def _job(tmp_path: Path, **overrides) -> slurm.SlurmJob:
    settings = {"space_file": SPACES / "digits.py", "nodes": 3, "cpus_per_node": 8, "workdir": tmp_path,
                "tracking_uri": "http://mlflow:5000", "run_args": ["--num-samples", "16"]}
    return slurm.SlurmJob(**{**settings, **overrides})


def test_the_sbatch_script_asks_slurm_for_the_job_and_passes_the_run_options(tmp_path):
    script = slurm.sbatch_script(_job(tmp_path, gpus_per_node=2, time="02:00:00", partition="gpu"))
    for line in ("#SBATCH --nodes=3", "#SBATCH --cpus-per-task=8", "#SBATCH --gpus-per-node=2",
                 "#SBATCH --time=02:00:00", "#SBATCH --partition=gpu",
                 f"#SBATCH --output={tmp_path}/slurm-logs/hpsearch-%j.out", "export RAY_AUTH_MODE=token"):
        assert line in script
    assert "--num-cpus=8 --num-gpus=2" in script and "--cpus-per-task=8 --gpus-per-task=2" in script
    run_line = next(line for line in script.splitlines() if "-m hpsearch run" in line)
    assert f"--storage {tmp_path}/ray_results" in run_line and "--tracking-uri http://mlflow:5000" in run_line
    assert str((SPACES / "digits.py").resolve()) in run_line and "--num-samples 16" in run_line
    assert "{{" not in script and "connect(" not in script  # every field filled; no socket towards the outside
    path = tmp_path / "job.sbatch"
    path.write_text(script)
    assert subprocess.run(["bash", "-n", str(path)], capture_output=True, check=False).returncode == 0


# A stand-in for SLURM and Python, enough to run the batch script here: `srun` notes its options and runs its
# command once per task on this machine; `python` notes every command but the script's own one-liners (`-c`),
# which it runs; `hpsearch.cluster.slurm wait ADDRESS N` waits until N `ray start` have been noted, and `hpsearch run`
# exits with $RUN_STATUS.
FAKE_SRUN = """#!/bin/bash
args="$*"
echo "srun ${args//$'\\n'/ }" >> "$CALLS"
tasks=1
while [[ "$1" == --* ]]; do [[ "$1" == --ntasks=* ]] && tasks="${1#--ntasks=}"; shift; done
for _ in $(seq "$tasks"); do "$@" & done
wait
"""
FAKE_SCONTROL = """#!/bin/bash
tr , '\\n' <<< "$SLURM_JOB_NODELIST"
"""
FAKE_PYTHON = f"""#!/bin/bash
if [ "$1" = -c ]; then exec {sys.executable} "$@"; fi
echo "python $*" >> "$CALLS"
if [ "$2 $3" = "hpsearch run" ]; then exit "$RUN_STATUS"; fi
if [ "$2 $3" = "hpsearch.cluster.slurm wait" ]; then
  for _ in $(seq 100); do
    [ "$(grep -c '^python -m ray.scripts.scripts start' "$CALLS")" -ge "$5" ] && exit 0; sleep 0.1
  done
  exit 1
fi
"""


def _run_batch_script(tmp_path: Path, nodes: list[str], run_status: int = 0, **env: str) -> tuple[int, list[str]]:
    """Run the generated script with the fakes above; return its exit code and the calls it made."""
    fakes = tmp_path / "bin"
    fakes.mkdir()
    for name, text in (("srun", FAKE_SRUN), ("scontrol", FAKE_SCONTROL), ("python", FAKE_PYTHON)):
        (fakes / name).write_text(text)
        (fakes / name).chmod(0o755)
    script = tmp_path / "job.sbatch"
    script.write_text(slurm.sbatch_script(_job(tmp_path, nodes=len(nodes), python=str(fakes / "python"))))
    calls = tmp_path / "calls"
    environ = {"PATH": f"{fakes}:{os.environ['PATH']}", "CALLS": str(calls), "RUN_STATUS": str(run_status),
               "SLURM_JOB_ID": "42", "SLURM_JOB_NODELIST": ",".join(nodes), **env}
    result = subprocess.run(["bash", str(script)], env=environ, capture_output=True, text=True, timeout=60,
                            check=False)
    return result.returncode, calls.read_text().splitlines()


def _call(calls: list[str], start: str, *words: str) -> str:
    """The first call that starts with ``start`` and holds every one of ``words``."""
    return next(call for call in calls if call.startswith(start) and all(word in call for word in words))


def test_the_batch_script_runs_the_search_against_the_head_at_hpsearch_head_ip(tmp_path):
    code, calls = _run_batch_script(tmp_path, ["n1", "n2", "n3"], run_status=3, HPSEARCH_HEAD_IP="10.9.8.7")
    assert code == 3  # the search's exit code is the job's
    head = _call(calls, "python -m ray.scripts.scripts start --head")
    port = re.search(r"--port=(\d+)", head)[1]
    assert "--node-ip-address=10.9.8.7" in head and "--temp-dir=/tmp/hpsearch-ray-42" in head
    assert f"--address=10.9.8.7:{port}" in _call(calls, "python -m ray.scripts.scripts start --block")
    search = _call(calls, "python -m hpsearch run")
    assert f"-m hpsearch run {(SPACES / 'digits.py').resolve()} --address 10.9.8.7:{port}" in search
    assert f"python -m hpsearch.cluster.slurm wait 10.9.8.7:{port} 3" in calls


def test_each_node_picks_its_own_ports_in_its_own_step(tmp_path):
    _, calls = _run_batch_script(tmp_path, ["n1", "n2", "n3"], HPSEARCH_HEAD_IP="10.9.8.7")
    head_step, worker_step = _call(calls, "srun", "--nodelist=n1"), _call(calls, "srun", "--exclude=n1")
    assert "--nodes=2 --ntasks=2 --ntasks-per-node=1" in worker_step
    for step in (head_step, worker_step):  # the port is chosen by the node's shell, not written in the step
        assert '--dashboard-agent-listen-port="$(free_port)"' in step
    workers = [call for call in calls if call.startswith("python -m ray.scripts.scripts start --block")]
    assert len(workers) == 2  # one task on each of the two other nodes
    worker = workers[0]
    assert re.search(r"--dashboard-agent-listen-port=\d+", worker) and "--temp-dir=/tmp/hpsearch-ray-42" in worker


def test_the_heads_address_is_one_of_its_own_interfaces_and_one_node_uses_loopback(tmp_path):
    import psutil

    own = {a.address for addrs in psutil.net_if_addrs().values() for a in addrs if a.family == socket.AF_INET}
    own -= {a for a in own if a.startswith("127.")}
    if not own:
        pytest.skip("this machine has no IPv4 address other than loopback")
    (tmp_path / "several").mkdir()
    (tmp_path / "one").mkdir()
    _, calls = _run_batch_script(tmp_path / "several", ["n1", "n2"])
    head_ip = re.search(r"--node-ip-address=([\d.]+)", _call(calls, "python -m ray.scripts.scripts start --head"))[1]
    assert head_ip in own
    _, calls = _run_batch_script(tmp_path / "one", ["n1"])
    assert "--node-ip-address=127.0.0.1" in _call(calls, "python -m ray.scripts.scripts start --head")
    assert not [call for call in calls if "--exclude=" in call]  # no worker step on one node


@pytest.mark.parametrize(("overrides", "message"), [
    ({"nodes": 0}, "--nodes must be at least 1"),
    ({"cpus_per_node": 0}, "--cpus-per-node must be at least 1"),
    ({"time": "90 minutes"}, "--time must be HH:MM:SS"),
    ({"tracking_uri": None}, "--nodes 3: a search on several nodes needs --tracking-uri http://"),
])
def test_slurm_job_mistakes_name_the_option(tmp_path, overrides, message):
    with pytest.raises(ClusterError, match=message):
        slurm.sbatch_script(_job(tmp_path, **overrides))


def test_slurm_command_writes_the_script_and_the_log_folder(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["slurm", str(SPACES / "digits.py"), "--cpus-per-node", "2", "--num-samples", "4"]) == 0
    script = (tmp_path / "digits.sbatch").read_text()
    run_line = next(line for line in script.splitlines() if "-m hpsearch run" in line)
    assert "#SBATCH --nodes=1" in script and "--num-samples 4" in run_line and "--storage" not in run_line
    assert (tmp_path / "slurm-logs").is_dir()
    assert "sbatch digits.sbatch" in capsys.readouterr().out


def test_slurm_command_refuses_a_trial_larger_than_a_node(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["slurm", str(SPACES / "digits.py"), "--cpus-per-node", "2", "--cpus-per-trial", "4"]) == 2
    assert "--cpus-per-node is 2" in capsys.readouterr().err
    assert not (tmp_path / "digits.sbatch").exists()


# ------------------------------------------------------------------------------------------------- Ray Jobs
def test_submit_needs_a_tracking_uri_that_outlives_the_job(tmp_path, capsys):
    assert main(["submit", str(SPACES / "digits.py"), "--ray-address", "http://127.0.0.1:1"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: submit: --tracking-uri must be") and len(err.splitlines()) == 1


def test_submit_refuses_data_outside_the_space_files_folder(tmp_path, capsys):
    (tmp_path / "data.csv").write_text("a,b\n1,2\n")
    (tmp_path / "spaces").mkdir()
    space = write_space(tmp_path / "spaces", """
search = Search(data="csv:../data.csv", target="b", params={"lr": 0.01})
""")
    assert main(["submit", str(space), "--ray-address", "http://127.0.0.1:1", "--tracking-uri", "http://m:5000"]) == 2
    assert "is outside the space file's folder" in capsys.readouterr().err


def test_the_kuberay_manifest_parses_and_its_entrypoint_is_a_valid_run_command():
    manifest = yaml.safe_load((REPO / "deploy" / "kuberay-rayjob.yaml").read_text())
    assert manifest["apiVersion"] == "ray.io/v1" and manifest["kind"] == "RayJob"
    spec = manifest["spec"]
    assert spec["rayClusterSpec"]["authOptions"] == {"mode": "token"}
    argv = shlex.split(spec["entrypoint"])
    assert argv[:4] == ["python", "-m", "hpsearch", "run"]
    args = parser().parse_args(argv[3:])
    assert args.address == "auto" and args.storage.startswith("s3://")
    assert args.tracking_uri.startswith("http://")
