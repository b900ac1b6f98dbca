"""The ``submit`` and ``slurm`` commands: argument parsing and printing only; the work is in :mod:`hpsearch.cluster`.

Both check the space file here, before anything leaves this machine, so a mistake in it is one line and exit
code 2 on the user's terminal rather than a failed job on the cluster.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from hpsearch.cli.options import add_search_options, search_argv, with_overrides
from hpsearch.errors import ClusterError

__all__ = ["add_commands"]

def add_commands(commands: argparse._SubParsersAction) -> None:
    """Add ``submit`` and ``slurm`` to the command line's subcommands."""
    submit = commands.add_parser("submit", help="submit the search as a Ray job (Ray Jobs API)")
    submit.add_argument("space_file", type=Path, metavar="SPACE_FILE", help="a Python file defining `search`")
    submit.add_argument("--ray-address", required=True, metavar="URL",
                        help="the Ray cluster's dashboard address, http://HEAD:8265")
    submit.add_argument("--wait", action="store_true", help="stream the job's logs and exit with its status")
    add_search_options(submit, "options passed to `hpsearch run`")
    submit.set_defaults(command=_submit)

    slurm = commands.add_parser("slurm", help="write a SLURM batch script that runs the search on a Ray cluster")
    slurm.add_argument("space_file", type=Path, metavar="SPACE_FILE", help="a Python file defining `search`")
    slurm.add_argument("--nodes", type=int, default=1, metavar="N", help="nodes (default 1)")
    slurm.add_argument("--cpus-per-node", type=int, required=True, metavar="C", help="CPUs per node")
    slurm.add_argument("--gpus-per-node", type=int, default=0, metavar="G", help="GPUs per node (default 0)")
    slurm.add_argument("--time", metavar="HH:MM:SS", help="the job's time limit")
    slurm.add_argument("--partition", metavar="P", help="the SLURM partition")
    slurm.add_argument("-o", "--output", type=Path, metavar="FILE", help="the script (default SPACE_STEM.sbatch)")
    slurm.add_argument("--workdir", type=Path, metavar="DIR",
                       help="where mlruns/, ray_results/ and slurm-logs/ go (default: the current folder)")
    slurm.add_argument("--submit", action="store_true", help="submit the script with sbatch and print the job id")
    add_search_options(slurm, "options passed to `hpsearch run`")
    slurm.set_defaults(command=_slurm)


def _checked_search(args: argparse.Namespace):  # noqa: ANN202 - a Search, imported lazily
    from hpsearch.space import load_space

    return with_overrides(load_space(args.space_file), args)


# ---------------------------------------------------------------------------------------------------- submit
def _submit(args: argparse.Namespace) -> int:
    from hpsearch.cluster import jobs

    search = _checked_search(args)
    jobs.check_job_files(search.data, args.space_file)
    _check_job_tracking_uri(args.tracking_uri)
    client, job_id = jobs.submit_job(args.ray_address, args.space_file, search_argv(args))
    print(f"submitted Ray job {job_id} to {args.ray_address}")
    if not args.wait:
        print(f"follow it with:\n  ray job logs --follow {job_id} --address {args.ray_address}")
        return 0
    status = jobs.tail_job(client, job_id, lambda line: print(line, flush=True))
    code = jobs.job_exit_code(client, job_id)
    print(f"Ray job {job_id} {status} (exit code {code})")
    return code


def _check_job_tracking_uri(uri: str | None) -> None:
    """A job runs in a temporary copy of the space file's folder: a relative store there is lost afterwards."""
    durable = uri is not None and (
        uri.startswith(("http://", "https://", "sqlite:////", "file:///", "/"))
        or ("://" in uri and not uri.startswith(("sqlite:", "file:")))
    )
    if not durable:
        raise ClusterError(f"submit: --tracking-uri must be an MLflow tracking server the cluster reaches "
                           f"(http://HOST:5000) or an absolute path on the cluster, but got {uri}: a Ray job runs "
                           f"in a temporary copy of the space file's folder, so a local store there would be lost")


# ----------------------------------------------------------------------------------------------------- slurm
def _slurm(args: argparse.Namespace) -> int:
    from hpsearch.cluster import slurm

    search = _checked_search(args)
    for key in ("cpu", "gpu"):
        per_node = getattr(args, f"{key}s_per_node")
        if search.resources[key] > per_node:
            raise ClusterError(f"a trial asks for {search.resources[key]:g} {key.upper()}s (resources.{key}) but "
                               f"--{key}s-per-node is {per_node}")
    workdir = (args.workdir or Path.cwd()).resolve()
    job = slurm.SlurmJob(
        space_file=args.space_file.resolve(), nodes=args.nodes, cpus_per_node=args.cpus_per_node, workdir=workdir,
        gpus_per_node=args.gpus_per_node, time=args.time, partition=args.partition, tracking_uri=args.tracking_uri,
        storage=args.storage, run_args=search_argv(args, skip=("--tracking-uri", "--storage")),
    )
    script_text = slurm.sbatch_script(job)
    script = args.output or Path(f"{args.space_file.stem}.sbatch")
    script.write_text(script_text)
    script.chmod(0o755)
    job.log_pattern.parent.mkdir(parents=True, exist_ok=True)  # sbatch does not create the log's folder
    print(f"wrote {script}: {job.nodes} node(s) x {job.cpus_per_node} CPUs"
          + (f" x {job.gpus_per_node} GPUs" if job.gpus_per_node else ""))
    if not args.submit:
        print(f"submit it with:\n  sbatch {script}\nits log: {job.log_pattern} (%j = the job id)")
        return 0
    job_id = slurm.submit_sbatch(script)
    print(f"submitted batch job {job_id}\nits log: {str(job.log_pattern).replace('%j', job_id)}")
    return 0
