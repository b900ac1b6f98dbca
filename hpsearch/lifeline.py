"""Forked helper processes end with the process that forked them, however it ends.

A search forks two helpers (:mod:`hpsearch.tracking.store`'s MLflow process and :mod:`hpsearch.figures.drawing`'s
drawer). When the driver ends normally it closes them; when it is killed (``kill -9``, the out-of-memory killer, a
machine's scheduler) nothing tells them, and a helper blocked on a queue that its own copy of the pipe keeps open
waited forever: a 330 MB process per kill, piling up.

The watch is by parent pid, the portable POSIX way: a process whose parent ends is adopted by another one (init
or a subreaper), so :func:`os.getppid` changes. A pipe's end-of-file would tell sooner, but every process forked
later inherits the pipe's write end and keeps it open. Linux's ``PR_SET_PDEATHSIG`` fires when the forking
*thread* ends, not the process, and is Linux only.

A helper that is another program (``hpsearch ui``'s ``mlflow ui`` and its uvicorn worker) cannot watch; it runs
under :func:`guard` (``python -m hpsearch.lifeline PARENT_PID COMMAND...``), which watches for it and ends its
process group when the parent is gone.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

__all__ = ["CHECK_INTERVAL_S", "alive", "exit_with_parent", "guard", "parent_gone"]

CHECK_INTERVAL_S = 0.5


def alive(pid: int) -> bool:
    """Whether a process ``pid`` runs on this machine (another user's counts)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def parent_gone(parent_pid: int) -> bool:
    """Whether the process that forked this one (its pid read *before* the fork) has ended."""
    return os.getppid() != parent_pid


def exit_with_parent(parent_pid: int, interval_s: float = CHECK_INTERVAL_S) -> threading.Thread:
    """In a forked child: end this process (at once, no clean-up) within ``interval_s`` of its parent's end.

    ``parent_pid`` is the parent's pid read before the fork, so that a parent killed while the child starts is
    noticed too. The watch runs on a daemon thread, so it works while the child's main thread is blocked.
    """

    def watch() -> None:
        while not parent_gone(parent_pid):
            time.sleep(interval_s)
        os._exit(0)

    thread = threading.Thread(target=watch, name="hpsearch-lifeline", daemon=True)
    thread.start()
    return thread


GUARD_GRACE_S = 10.0


def guard(parent_pid: int, command: list[str]) -> int:
    """Run ``command`` and return its exit code; if ``parent_pid`` ends first, end this process's whole group.

    The caller starts the guard in a session of its own (``start_new_session``), so the group is the guard,
    ``command`` and whatever ``command`` starts: SIGTERM to all of them, SIGKILL to what is left after
    :data:`GUARD_GRACE_S` seconds (the guard included).
    """
    child = subprocess.Popen(command)
    while child.poll() is None:
        if parent_gone(parent_pid):
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            os.killpg(os.getpgrp(), signal.SIGTERM)
            deadline = time.monotonic() + GUARD_GRACE_S
            while child.poll() is None and time.monotonic() < deadline:
                time.sleep(0.1)
            os.killpg(os.getpgrp(), signal.SIGKILL)
        time.sleep(CHECK_INTERVAL_S)
    return child.returncode


if __name__ == "__main__":
    sys.exit(guard(int(sys.argv[1]), sys.argv[2:]))
