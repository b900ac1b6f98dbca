"""How a search's data reaches its Ray workers: through a file when Ray runs on this machine only, through Ray's
object store (``ray.put``, ``tune.with_parameters``) when it spans several.

Why not always the object store: a driver that owns an object there is ended by Ray itself (exit code 1, about a
tenth of a second later) when the local raylet dies. Ray then tries to recover the object and, unable to write
to the dead store, ends the process. A batch system's end of job (SIGTERM to every process of the job, Ray's own
included) does exactly that, so the search could neither close its runs nor say how to resume. On one machine a
file costs no more: joblib writes the arrays as they are and each worker memory-maps them (copy-on-write), so the
workers share the same pages, as they would in the store.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import joblib

from hpsearch import lifeline
from hpsearch.cluster import checks
from hpsearch.data.dataset import Dataset

__all__ = ["DataFile", "on_one_machine", "received", "shipped"]

_PREFIX = "hpsearch-data-"  # then the pid of the search's process: see _remove_left_behind


@dataclass(frozen=True)
class DataFile:
    """A search's data written for the workers on this machine (a path: it pickles small)."""

    path: str

    def load(self) -> Dataset:
        return joblib.load(self.path, mmap_mode="c")  # "c": writable arrays, the pages shared until written


def on_one_machine() -> bool:
    """Whether the Ray this process is connected to has one alive node, this process's own (a Ray Client,
    ``ray://``, runs its driver on another machine)."""
    import ray
    from ray.util.client import ray as client

    if client.is_connected():
        return False
    nodes = checks.alive_nodes(ray.nodes())
    return len(nodes) == 1 and nodes[0].get("NodeID") == ray.get_runtime_context().get_node_id()


@contextlib.contextmanager
def shipped(data: Dataset) -> Iterator[DataFile | None]:
    """``data`` in a file for the workers while the block runs, removed after it; None (ship it through Ray's
    object store) where Ray spans several machines."""
    if not on_one_machine():
        yield None
        return
    _remove_left_behind()
    folder = Path(tempfile.mkdtemp(prefix=f"{_PREFIX}{os.getpid()}-"))
    try:
        path = folder / "data.joblib"
        joblib.dump(data, path)
        yield DataFile(str(path))
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _remove_left_behind() -> None:
    """Remove the files of searches whose process is gone (``kill -9``, a machine's end of job): they are never
    read again, and a large table's would fill the temporary folder."""
    for folder in Path(tempfile.gettempdir()).glob(f"{_PREFIX}*-*"):
        pid = folder.name[len(_PREFIX):].split("-", 1)[0]
        if pid.isdigit() and not lifeline.alive(int(pid)):
            shutil.rmtree(folder, ignore_errors=True)


def received(data: Dataset | DataFile) -> Dataset:
    """The data a worker was shipped: read from its file, or as Ray handed it over."""
    return data.load() if isinstance(data, DataFile) else data
