"""What a test can see of a command's processes from outside: which process imported what, and who is alive.

The command runs as a user runs it (``python -m hpsearch ...``); ``tests/import_log/sitecustomize.py`` records
the imports; ``/proc`` (Linux) shows the processes, as ``ps`` would.
"""

from __future__ import annotations

import os
from pathlib import Path

from tests.conftest import REPO

IMPORT_LOG_DIR = Path(__file__).resolve().parent / "import_log"


def env_logging_imports(log: Path, *packages: str, **extra: str) -> dict[str, str]:
    """The environment of a command whose processes record their first import of ``packages`` in ``log``."""
    return {**os.environ, "PYTHONPATH": f"{IMPORT_LOG_DIR}{os.pathsep}{REPO}", "HPSEARCH_IMPORT_LOG": str(log),
            "HPSEARCH_IMPORT_WATCH": ",".join(packages), **extra}


def imports(log: Path) -> list[tuple[int, int, str]]:
    """``(pid, parent pid, package)`` for each first import of a watched package, in the order they happened."""
    if not log.exists():
        return []
    return [(int(pid), int(ppid), name) for pid, ppid, name in (line.split() for line in log.read_text().splitlines())]


def stat(pid: int) -> list[str] | None:
    """``/proc/PID/stat`` after the command name: state, parent pid, ...; None once the process is gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None


def alive(pid: int) -> bool:
    """Whether a process runs (a zombie, ended but not yet reaped, does not)."""
    fields = stat(pid)
    return fields is not None and fields[0] != "Z"


def living_children(pid: int) -> dict[int, str]:
    """The living processes whose parent is ``pid``, with their command names."""
    children = {}
    for name in os.listdir("/proc"):
        if name.isdigit() and (fields := stat(int(name))) is not None and fields[1] == str(pid) and fields[0] != "Z":
            try:
                children[int(name)] = Path(f"/proc/{name}/comm").read_text().strip()
            except OSError:
                continue
    return children
