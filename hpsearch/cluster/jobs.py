"""Searches on clusters we do not run ourselves: a Ray cluster, the Ray Jobs API, a SLURM batch job.

hpsearch writes no distribution of its own. On a Ray cluster the runner connects with ``ray.init(address=...)``
and Ray Tune places trials on the nodes; :func:`check_cluster` first makes sure a multi-node search has what it
needs (shared storage for checkpoints, a tracking server). :func:`submit_job` hands the same ``hpsearch run``
command to Ray's Jobs API, with the space file's folder as the job's working directory. :func:`sbatch_script`
writes a SLURM batch script (the template ``slurm.sbatch``) that starts Ray on the job's nodes and runs that
command against it; it starts Ray itself rather than with ``ray symmetric-run``, which stops every Ray process on
a node and refuses a node where any other Ray runs (the README's SLURM section says more).

Ray 2.60 authenticates with a token (``RAY_AUTH_MODE=token`` and the token in ``~/.ray/auth_token``,
``RAY_AUTH_TOKEN_PATH`` or ``RAY_AUTH_TOKEN``); Ray itself never sends a token to an address given explicitly
unless ``RAY_AUTH_MODE=token`` is set, so we do not either: we say how to fix it (:func:`connection_error`).
The batch script makes a fresh token for each job.
"""

from __future__ import annotations

import asyncio
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from hpsearch.errors import ClusterError

__all__ = ["SlurmJob", "alive_nodes", "check_cluster", "check_job_files", "connection_error", "job_exit_code",
           "sbatch_script", "storage_path", "submit_job", "submit_sbatch", "tail_job", "wait_for_nodes"]

TOKEN_HELP = ("the cluster uses Ray token authentication: set RAY_AUTH_MODE=token and give the cluster's token "
              "in ~/.ray/auth_token, RAY_AUTH_TOKEN_PATH=FILE or RAY_AUTH_TOKEN (on the head node: "
              "`ray get-auth-token`)")
STORAGE_NEEDED = ("--storage PATH_OR_URI: a folder every node shares (e.g. /shared/ray_results) or an object store "
                  "URI (s3://bucket/path, gs://...) for the trials' checkpoints")
TRACKING_NEEDED = "--tracking-uri http://HOST:PORT: an MLflow tracking server every node can reach"
JOB_AGENT_WAIT_S = 60
JOB_EXCLUDES = ["mlruns", "ray_results", "__pycache__", ".git", "*.sbatch"]
SBATCH_TEMPLATE = "slurm.sbatch"  # package data, next to this module


# ------------------------------------------------------------------------------------------------- checks
def storage_path(storage: str | None, default: Path) -> str:
    """Ray Tune's ``storage_path``: a URI as given (``s3://...``), a local folder made absolute."""
    if storage is None:
        return str(default.resolve())
    return storage if "://" in storage else str(Path(storage).expanduser().resolve())


def check_cluster(nodes: Sequence[dict[str, Any]], resources: dict[str, float], tracking_uri: str | None,
                  storage: str | None) -> None:
    """Refuse a search the cluster cannot finish, before anything is written.

    Args:
        nodes: ``ray.nodes()``.
        resources: what one trial asks for (``{"cpu": 1, "gpu": 0}``).
        tracking_uri: ``--tracking-uri`` (``None``: the local store).
        storage: ``--storage`` (``None``: the local results folder).

    Several nodes need a storage every node writes its checkpoints to and reads back from, and one tracking
    server every node can reach; a local folder or SQLite file on the driver's machine is neither. A trial
    that fits the cluster's total but no single node would wait forever.
    """
    alive = alive_nodes(nodes)
    biggest = {key: max((n.get("Resources", {}).get(key.upper(), 0) for n in alive), default=0)
               for key in ("cpu", "gpu")}
    for key, needed in resources.items():
        if key in biggest and needed > biggest[key]:
            raise ClusterError(f"a trial asks for {needed:g} {key.upper()}s (resources.{key}, --{key}s-per-trial) "
                               f"but the largest of the cluster's {len(alive)} nodes has {biggest[key]:g}")
    if len(alive) <= 1:
        return
    missing = [] if storage else [STORAGE_NEEDED]
    if not _is_server(tracking_uri):
        missing.append(f"{TRACKING_NEEDED} (got {tracking_uri or 'the local store ./mlruns'})")
    if missing:
        raise ClusterError(f"the Ray cluster has {len(alive)} nodes, so the search needs " + "; and ".join(missing))


def alive_nodes(nodes: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The alive entries of ``ray.nodes()`` (dead nodes stay listed for a while)."""
    return [n for n in nodes if n.get("Alive")]


def _is_server(tracking_uri: str | None) -> bool:
    return (tracking_uri or "").startswith(("http://", "https://"))


def connection_error(address: str, err: BaseException) -> ClusterError:
    """One clear line for a cluster that cannot be reached, with the fix for Ray's token authentication."""
    text = str(err).strip().splitlines()
    first = text[0] if text else type(err).__name__
    if _is_auth_error(err) and os.environ.get("RAY_AUTH_MODE", "").lower() != "token":
        return ClusterError(f"cannot connect to the Ray cluster at {address}: {TOKEN_HELP}")
    if _is_auth_error(err):
        return ClusterError(f"cannot connect to the Ray cluster at {address}: the token was refused or not found "
                            f"({first}); {TOKEN_HELP}")
    return ClusterError(f"cannot connect to the Ray cluster at {address}: {first}")


def _is_auth_error(err: BaseException) -> bool:
    """Whether ``err`` or what caused it is Ray refusing us for want of the right token."""
    chain = [err]
    while chain[-1].__cause__ is not None and len(chain) < 10:
        chain.append(chain[-1].__cause__)
    text = " ".join(f"{type(e).__name__} {e}" for e in chain).lower()
    return any(word in text for word in ("authentication", "auth_token", "unauthorized", "unauthenticated", "401",
                                         "403", "forbidden", "invalidauthtoken"))


def wait_for_nodes(address: str, count: int, timeout_s: float = 300) -> int:
    """Block until the Ray cluster at ``address`` has ``count`` alive nodes (used by the batch script)."""
    import ray

    deadline = time.monotonic() + timeout_s
    alive = 0
    while time.monotonic() < deadline:
        try:
            if not ray.is_initialized():
                ray.init(address=address, logging_level="ERROR", log_to_driver=False)
            alive = sum(bool(n["Alive"]) for n in ray.nodes())
            if alive >= count:
                ray.shutdown()
                return alive
        except Exception:  # noqa: BLE001 - the head is still starting; try again
            ray.shutdown()
        time.sleep(2)
    raise ClusterError(f"the Ray cluster at {address} has {alive} of {count} nodes after {timeout_s:.0f}s")


# ------------------------------------------------------------------------------------------------ Ray Jobs
def check_job_files(data: object, space_file: Path) -> None:
    """A job sees only the space file's folder: a data file outside it would be missing on the cluster."""
    if not isinstance(data, str) or data.partition(":")[0] not in ("csv", "parquet"):
        return
    folder = space_file.resolve().parent
    path = (folder / data.partition(":")[2]).resolve()
    if not path.is_relative_to(folder):
        raise ClusterError(f"{space_file}: data: {data} is outside the space file's folder {folder}, which is all "
                           f"a Ray job receives; move the data into that folder (or below it)")


def submit_job(ray_address: str, space_file: Path, run_args: Sequence[str]) -> tuple[Any, str]:
    """Submit ``python -m hpsearch run SPACE_FILE --address auto RUN_ARGS`` as a Ray job; return (client, job id).

    The job's working directory is the space file's folder (so ``csv:data/x.csv`` resolves as it does
    locally), and the local ``hpsearch`` package travels with it (``py_modules``), so the cluster runs the
    same hpsearch as the submitter; torch, Ray, Optuna and MLflow must be installed on the cluster.
    """
    import hpsearch

    try:
        from ray.job_submission import JobSubmissionClient
    except ImportError as err:  # ray[default] is a dependency; this is a broken install
        raise ClusterError(f"the Ray Jobs API needs ray[default]: pip install 'ray[default]' ({err})") from None
    folder = space_file.resolve().parent
    entrypoint = shlex.join(["python", "-m", "hpsearch", "run", space_file.name, "--address", "auto", *run_args])
    runtime_env = {"working_dir": str(folder), "py_modules": [str(Path(hpsearch.__file__).parent)],
                   "excludes": JOB_EXCLUDES}
    deadline = time.monotonic() + JOB_AGENT_WAIT_S
    while True:
        try:
            client = JobSubmissionClient(ray_address)
            job_id = client.submit_job(entrypoint=entrypoint, runtime_env=runtime_env,
                                       metadata={"hpsearch.space_file": space_file.name})
            return client, job_id
        except Exception as err:  # noqa: BLE001 - unreachable, refused, or a runtime_env Ray cannot upload
            # A cluster that has just started answers "No available agent ... try again later" for a while.
            if "try again later" not in str(err) or time.monotonic() > deadline:
                raise connection_error(ray_address, err) from None
            time.sleep(2)


def tail_job(client: Any, job_id: str, echo: Callable[[str], None]) -> str:
    """Stream the job's logs until it ends; return its final status (``SUCCEEDED``, ``FAILED``, ``STOPPED``)."""

    async def _tail() -> None:
        async for lines in client.tail_job_logs(job_id):
            echo(lines.rstrip("\n"))

    asyncio.run(_tail())
    status = client.get_job_status(job_id)
    while not status.is_terminal():  # the log stream can close a moment before the status changes
        time.sleep(0.5)
        status = client.get_job_status(job_id)
    return str(status.value)


def job_exit_code(client: Any, job_id: str) -> int:
    """The job's driver's own exit code when Ray knows it (2 for a user error, 1 when every trial failed)."""
    info = client.get_job_info(job_id)
    if info.driver_exit_code is not None:
        return int(info.driver_exit_code)
    return 0 if str(info.status.value) == "SUCCEEDED" else 1


# -------------------------------------------------------------------------------------------------- SLURM
@dataclass(frozen=True)
class SlurmJob:
    """What the batch script asks SLURM for and runs.

    Args:
        space_file: the space file (on a filesystem every node sees).
        nodes: SLURM nodes; Ray's head runs on the first, workers on the others.
        cpus_per_node: CPUs per node, all given to Ray.
        workdir: where ``mlruns/``, ``ray_results/`` and the log ``slurm-logs/hpsearch-JOBID.out`` go.
        tracking_uri: ``--tracking-uri``; ``None``: ``WORKDIR/mlruns`` (one node only).
        storage: ``--storage``; ``None``: ``WORKDIR/ray_results`` (on several nodes, WORKDIR must be shared).
        run_args: other options for ``hpsearch run`` (``--num-samples 8``).
    """

    space_file: Path
    nodes: int
    cpus_per_node: int
    workdir: Path
    gpus_per_node: int = 0
    time: str | None = None
    partition: str | None = None
    tracking_uri: str | None = None
    storage: str | None = None
    run_args: list[str] = field(default_factory=list)
    python: str = sys.executable

    @property
    def log_pattern(self) -> Path:
        return self.workdir / "slurm-logs" / "hpsearch-%j.out"

    def check(self) -> None:
        """Refuse what SLURM or the search would reject later, naming the option."""
        if self.nodes < 1:
            raise ClusterError(f"--nodes must be at least 1, but got {self.nodes}")
        if self.cpus_per_node < 1:
            raise ClusterError(f"--cpus-per-node must be at least 1, but got {self.cpus_per_node}")
        if self.gpus_per_node < 0:
            raise ClusterError(f"--gpus-per-node must be 0 or more, but got {self.gpus_per_node}")
        if self.time is not None and not re.fullmatch(r"(\d+-)?\d{1,2}:\d{2}:\d{2}", self.time):
            raise ClusterError(f"--time must be HH:MM:SS or D-HH:MM:SS, but got {self.time!r}")
        if self.nodes > 1 and not _is_server(self.tracking_uri):
            raise ClusterError(f"--nodes {self.nodes}: a search on several nodes needs {TRACKING_NEEDED}")


def sbatch_script(job: SlurmJob) -> str:
    """The batch script: Ray's head on the first node, a worker on each other node (``srun``), the search.

    The script is the template ``hpsearch/cluster/slurm.sbatch`` with ``{{name}}`` filled in; the shell does the rest on
    the nodes themselves (their addresses, their free ports), which is why they are not chosen here.
    """
    job.check()
    directives = [f"--job-name=hpsearch-{job.space_file.stem}", f"--nodes={job.nodes}", "--ntasks-per-node=1",
                  f"--cpus-per-task={job.cpus_per_node}", f"--output={job.log_pattern}"]
    if job.gpus_per_node:
        directives.append(f"--gpus-per-node={job.gpus_per_node}")
    if job.time:
        directives.append(f"--time={job.time}")
    if job.partition:
        directives.append(f"--partition={job.partition}")
    run_args = list(job.run_args)
    if job.tracking_uri:
        run_args += ["--tracking-uri", job.tracking_uri]
    if job.storage or job.nodes > 1:  # every node writes its checkpoints there: the workdir must be shared
        run_args += ["--storage", job.storage or str(job.workdir / "ray_results")]
    step = f"--export=ALL --cpus-per-task={job.cpus_per_node}"  # what each node's Ray step asks SLURM for
    if job.gpus_per_node:
        step += f" --gpus-per-task={job.gpus_per_node}"
    values = {
        "directives": "\n".join(f"#SBATCH {d}" for d in directives), "log": str(job.log_pattern),
        "workdir": shlex.quote(str(job.workdir)), "python": shlex.quote(job.python),
        "space": shlex.quote(str(job.space_file.resolve())), "run_args": shlex.join(run_args),
        "cpus": str(job.cpus_per_node), "gpus": str(job.gpus_per_node), "step": step,
    }
    template = resources.files("hpsearch.cluster").joinpath(SBATCH_TEMPLATE).read_text()
    return re.sub(r"\{\{(\w+)\}\}", lambda match: values[match[1]], template)


def submit_sbatch(script: Path) -> str:
    """``sbatch --parsable SCRIPT``; return the job id."""
    if shutil.which("sbatch") is None:
        raise ClusterError(f"sbatch is not on PATH: run this on a SLURM login node, or copy {script} there and run "
                           f"`sbatch {script.name}`")
    result = subprocess.run(["sbatch", "--parsable", str(script)], capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise ClusterError(f"sbatch {script} failed: {(result.stderr or result.stdout).strip()}")
    return result.stdout.strip().split(";")[0]


def _main(argv: Sequence[str]) -> int:
    """``python -m hpsearch.cluster.jobs wait ADDRESS COUNT``: the batch script's wait for its Ray nodes."""
    if len(argv) != 3 or argv[0] != "wait":
        print("usage: python -m hpsearch.cluster.jobs wait ADDRESS COUNT", file=sys.stderr)
        return 2
    try:
        alive = wait_for_nodes(argv[1], int(argv[2]))
    except ClusterError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(f"hpsearch: the Ray cluster at {argv[1]} has {alive} node(s)")
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
