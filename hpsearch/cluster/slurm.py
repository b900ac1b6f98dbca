"""A SLURM batch job: :func:`sbatch_script` writes a batch script (the template ``slurm.sbatch``, package data
next to this module) that starts Ray on the job's nodes and runs ``hpsearch run`` against it.

It starts Ray itself rather than with ``ray symmetric-run``, which stops every Ray process on a node and refuses a
node where any other Ray runs (docs/clusters.md says more). The batch script makes a fresh token for each job,
picks each node's ports on that node, and takes the head's address from the node's own interfaces.
"""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from hpsearch.cluster.checks import TRACKING_NEEDED, is_server, wait_for_nodes
from hpsearch.errors import ClusterError

__all__ = ["SlurmJob", "sbatch_script", "submit_sbatch"]
SBATCH_TEMPLATE = "slurm.sbatch"  # package data, next to this module


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
        if self.nodes > 1 and not is_server(self.tracking_uri):
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
    """``python -m hpsearch.cluster.slurm wait ADDRESS COUNT``: the batch script's wait for its Ray nodes."""
    if len(argv) != 3 or argv[0] != "wait":
        print("usage: python -m hpsearch.cluster.slurm wait ADDRESS COUNT", file=sys.stderr)
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
