"""End-to-end on a real single-node SLURM cluster on this machine: ``hpsearch slurm --submit`` runs a search.

The fixture starts Debian's munge and SLURM daemons (``munged``, ``slurmctld``, ``slurmd``) in the foreground with
everything in a temporary folder: their own munge key and socket, a ``slurm.conf`` on free ports of 127.0.0.1,
state, spool, pid and log files. It stops them by pid. It needs root (SLURM runs as root here) and the packages
``slurm-wlm`` and ``munge`` (``.ci/run`` installs them); without them the test is skipped, saying so.
"""

from __future__ import annotations

import os
import random
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from mlflow import MlflowClient

from tests.clusters import Processes, free_port, wait_until
from tests.conftest import REPO, SPACES

pytestmark = pytest.mark.e2e

DAEMONS = ("munged", "slurmctld", "slurmd", "sbatch", "scontrol", "sinfo")


def _missing() -> list[str]:
    found = {name: shutil.which(name) or shutil.which(name, path="/usr/sbin:/usr/bin") for name in DAEMONS}
    return [name for name, path in found.items() if path is None]


@pytest.fixture(scope="module")
def slurm_env() -> Iterator[dict[str, str]]:
    """A running single-node SLURM cluster; yields the environment that talks to it (``SLURM_CONF``)."""
    missing = _missing()
    if missing:
        pytest.skip(f"needs the Debian packages slurm-wlm and munge (missing: {', '.join(missing)}); "
                    "`apt-get install -y slurm-wlm munge`, as .ci/run does")
    if os.geteuid() != 0:
        pytest.skip("the single-node SLURM cluster runs its daemons as root")
    root = Path(tempfile.mkdtemp(prefix="hp6slurm-", dir="/tmp"))
    for sub in ("state", "spool", "munge"):
        (root / sub).mkdir(mode=0o700)
    key = root / "munge" / "munge.key"
    key.write_bytes(os.urandom(1024))
    key.chmod(0o400)
    sock = root / "munge" / "munge.sock"
    conf = root / "slurm.conf"
    conf.write_text(_slurm_conf(root, sock))
    env = {**os.environ, "SLURM_CONF": str(conf), "PYTHONPATH": str(REPO),
           "PATH": f"{os.environ.get('PATH', '')}:/usr/sbin"}
    env = {k: v for k, v in env.items() if not k.startswith(("RAY_", "SLURM_")) or k == "SLURM_CONF"}
    procs = Processes(root)
    try:
        munged = procs.start("munged", ["munged", "--foreground", "--force", f"--key-file={key}",
                                        f"--socket={sock}", f"--pid-file={root / 'munge' / 'munged.pid'}",
                                        f"--seed-file={root / 'munge' / 'seed'}",
                                        f"--log-file={root / 'munge' / 'munged.log'}"], env)
        wait_until(sock.exists, 30, "munged's socket", lambda: procs.log("munged"), munged)
        ctld = procs.start("slurmctld", ["slurmctld", "-D", "-i", "-f", str(conf)], env)
        slurmd = procs.start("slurmd", ["slurmd", "-D", "-f", str(conf)], env)
        wait_until(lambda: _node_state(env) == "idle", 60, "the SLURM node to be idle",
                   lambda: procs.log("slurmctld") + procs.log("slurmd"), slurmd)
        assert ctld.poll() is None, procs.log("slurmctld")
        yield env
    finally:
        procs.stop_all()
        shutil.rmtree(root, ignore_errors=True)


def _slurm_conf(root: Path, sock: Path) -> str:
    host = socket.gethostname()
    return f"""\
ClusterName=hp6test
SlurmctldHost={host}(127.0.0.1)
SlurmctldPort={free_port()}
SlurmdPort={free_port()}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={sock}
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
MpiDefault=none
ReturnToService=2
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SchedulerType=sched/backfill
MinJobAge=600
FirstJobId={random.randint(100_000, 900_000)}
StateSaveLocation={root / 'state'}
SlurmdSpoolDir={root / 'spool'}
SlurmctldPidFile={root / 'slurmctld.pid'}
SlurmdPidFile={root / 'slurmd.pid'}
SlurmctldLogFile={root / 'slurmctld.log'}
SlurmdLogFile={root / 'slurmd.log'}
NodeName={host} NodeAddr=127.0.0.1 CPUs={os.cpu_count()} RealMemory=1000 State=UNKNOWN
PartitionName=hp6 Nodes={host} Default=YES MaxTime=INFINITE State=UP
"""


def _node_state(env: dict[str, str]) -> str:
    result = subprocess.run(["sinfo", "-h", "-o", "%T"], env=env, capture_output=True, text=True, check=False)
    return result.stdout.strip()


def _job_state(job_id: str, env: dict[str, str]) -> str:
    result = subprocess.run(["scontrol", "show", "job", job_id, "-o"], env=env, capture_output=True, text=True,
                            check=False)
    fields = dict(word.split("=", 1) for word in result.stdout.split() if "=" in word)
    return fields.get("JobState", "UNKNOWN")


def test_the_generated_sbatch_script_runs_a_search_to_completion(slurm_env, tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "hpsearch", "slurm", str(SPACES / "breast_cancer.py"), "--nodes", "1",
         "--cpus-per-node", "1", "--time", "00:10:00", "-o", "search.sbatch", "--submit",
         "--num-samples", "2", "--max-epochs", "1", "--experiment", "slurm"],
        env=slurm_env, cwd=tmp_path, capture_output=True, text=True, timeout=120, check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    job_id = result.stdout.split("submitted batch job ")[1].split()[0]
    log = tmp_path / "slurm-logs" / f"hpsearch-{job_id}.out"
    assert str(log) in result.stdout
    try:
        wait_until(lambda: _job_state(job_id, slurm_env) in ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT"), 300,
                   f"SLURM job {job_id}", lambda: log.read_text() if log.exists() else "")
    finally:
        subprocess.run(["scancel", job_id], env=slurm_env, capture_output=True, check=False)
        shutil.rmtree(f"/tmp/hpsearch-ray-{job_id}", ignore_errors=True)
    output = log.read_text()
    assert _job_state(job_id, slurm_env) == "COMPLETED", output[-4000:]
    assert "search finished" in output and "the search exited with status 0" in output

    client = MlflowClient(f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("slurm").experiment_id])
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert len(runs) == 3 and len(children) == 2
    assert all(c.info.status == "FINISHED" and c.data.tags["hpsearch.node"] for c in children)
    assert (tmp_path / "ray_results").is_dir()  # checkpoints where the script said
