"""Ray Jobs: :func:`submit_job` hands the same ``hpsearch run`` command to Ray's Jobs API, with the space file's
folder as the job's working directory and hpsearch itself as a ``py_module``; :func:`tail_job` streams its logs.
"""

from __future__ import annotations

import asyncio
import shlex
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from hpsearch.cluster.checks import connection_error
from hpsearch.errors import ClusterError

__all__ = ["check_job_files", "job_exit_code", "submit_job", "tail_job"]
JOB_AGENT_WAIT_S = 60
JOB_EXCLUDES = ["mlruns", "ray_results", "__pycache__", ".git", "*.sbatch"]


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
