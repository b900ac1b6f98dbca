"""SIGTERM (``kill PID``, a process manager, a batch system's end of job) stops a search as Ctrl-C does, with its
own exit code, 143 (128 + 15, as a shell reports it).

The handler raises :class:`Terminated` (a ``KeyboardInterrupt``) where the main thread is, so the search closes its
runs and prints how to resume exactly as after Ctrl-C. A batch system signals every process of the job, Ray's own
too (Ray shields them from Ctrl-C only): the main thread may then be blocked in a call to Ray that waits a minute
for Ray's dead GCS before Ray ends the process with exit code 1, and no Python handler runs meanwhile. So a watchdog
thread, woken by the signal itself (``signal.set_wakeup_fd``: written by the interpreter's C handler, whatever the
main thread does), runs ``on_stuck`` (close the runs, say how to resume) when the main thread has not started to
stop within :data:`GRACE_S` seconds, and ends the process with code 143.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import sys
import threading
from collections.abc import Callable, Iterator

__all__ = ["EXIT_TERMINATED", "GRACE_S", "Terminated", "terminate_as_interrupt"]

EXIT_TERMINATED = 143
GRACE_S = 10.0


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where the search is: it ends as Ctrl-C ends it (runs closed, the resume line)."""


@contextlib.contextmanager
def terminate_as_interrupt(on_stuck: Callable[[], None]) -> Iterator[list[int]]:
    """Within the block, SIGTERM raises :class:`Terminated` in the main thread (a second one while the runs are
    closed is ignored), with the watchdog above. Yields the list of signals received. A SIGTERM that this process
    was started ignoring (``nohup``) stays ignored; outside the main thread nothing changes."""
    received: list[int] = []
    previous = signal.getsignal(signal.SIGTERM)
    if previous is signal.SIG_IGN or threading.current_thread() is not threading.main_thread():
        yield received
        return
    handled = threading.Event()  # the main thread is stopping the search

    def stop(signum: int, _frame: object) -> None:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # first: a second SIGTERM in handled.set() would deadlock
        received.append(signum)
        handled.set()
        raise Terminated

    read, write = os.pipe()
    os.set_blocking(write, False)
    done = threading.Event()
    watchdog = threading.Thread(target=_watch, args=(read, handled, done, on_stuck), name="hpsearch-sigterm",
                                daemon=True)
    signal.signal(signal.SIGTERM, stop)
    wakeup = signal.set_wakeup_fd(write, warn_on_full_buffer=False)
    watchdog.start()
    try:
        yield received
    finally:
        signal.set_wakeup_fd(wakeup)
        signal.signal(signal.SIGTERM, previous)
        done.set()
        watchdog.join()
        os.close(read)
        os.close(write)


def _watch(read: int, handled: threading.Event, done: threading.Event, on_stuck: Callable[[], None]) -> None:
    """Wait for SIGTERM's byte on ``read``; then give the main thread :data:`GRACE_S` seconds to start stopping."""
    poller = select.poll()  # not select.select: it fails on descriptors past 1023, which a long process reaches
    poller.register(read, select.POLLIN)
    while not done.is_set():
        if not poller.poll(200):
            continue
        if signal.SIGTERM not in os.read(read, 64):
            continue  # another signal (Ctrl-C): the main thread handles it
        if handled.wait(GRACE_S) or done.is_set():
            return
        with contextlib.suppress(Exception):
            on_stuck()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(EXIT_TERMINATED)
