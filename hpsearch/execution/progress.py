"""The search's progress in the terminal: counts, the best trial so far, elapsed time and an estimate of the rest.

One object follows the search's trial events (fed by the runner's Tune callback). On a terminal it keeps one
status line up to date in place; in a log (stdout is a file or a pipe) it writes plain lines without escape
codes, one per finished trial, so that ``hpsearch run ... > search.log`` reads top to bottom. Three levels:
``quiet`` (only warnings and the final summary the CLI prints), ``normal`` and ``verbose`` (every trial start and
every epoch's metrics as well).
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TextIO

from hpsearch.show import number
from hpsearch.tracking.schema import ENDED, TrialRecord

__all__ = ["QUIET", "NORMAL", "VERBOSE", "Progress", "Snapshot", "format_duration", "trial_line"]

QUIET, NORMAL, VERBOSE = 0, 1, 2
_CLEAR_LINE = "\r\x1b[K"
_RUNNING_SHOWN = 3  # running trials named in the status line; more are counted


@dataclass
class Snapshot:
    """Where the search stands: what the status line shows, as data (tests and the final summary read it)."""

    total: int | None  # None: trials until the time budget is spent
    running: int = 0
    counts: dict[str, int] = field(default_factory=lambda: {"completed": 0, "stopped": 0, "failed": 0})
    best_value: float | None = None
    best_trial: str | None = None
    elapsed_s: float = 0.0
    eta_s: float | None = None
    max_epochs: int | None = None
    running_epochs: dict[str, int] = field(default_factory=dict)  # running trial -> epochs it has trained
    budget_left_s: float | None = None  # of the search's time budget

    @property
    def done(self) -> int:
        return sum(self.counts.values())


class Progress:
    """Follows trial events and shows them.

    The clock starts when the display is made (the command's start), so the status line's time and the final
    ``search finished in`` agree; on a terminal a timer redraws the status line every ``tick_s`` seconds, so
    the clock ticks while no trial reports. The estimate of the time left comes from the epochs trained so far
    against the epochs the search still needs, and never grows while the trials run.

    Args:
        verbosity: ``QUIET``, ``NORMAL`` or ``VERBOSE``.
        stream: where to write (stdout by default).
        live: keep one status line updated in place; by default only when ``stream`` is a terminal.
        clock: seconds, monotonic (tests pass their own).
        tick_s: how often a live status line is redrawn when nothing happens.
    """

    def __init__(self, verbosity: int = NORMAL, stream: TextIO | None = None, live: bool | None = None,
                 clock: Callable[[], float] = time.monotonic, tick_s: float = 1.0) -> None:
        self.verbosity = verbosity
        self.stream = stream or sys.stdout
        self.live = _is_terminal(self.stream) if live is None else live
        self.metric, self.mode = "", "min"
        self.state = Snapshot(total=0)
        self.clock, self.tick_s = clock, tick_s
        self.started = clock()
        self.ended_names: set[str] = set()  # the trials announced as ended in this run of the command
        self._trials_started: float | None = None  # when the trials began: the pace is measured from there
        self._epochs_seen: dict[str, int] = {}  # trial -> last epoch counted in this session's pace
        self._epochs_now = 0  # epochs trained since begin()
        self._ended_epochs: list[int] = []  # epochs of every ended trial: what a trial takes on average
        self._eta: tuple[float, float] | None = None  # (estimate, when): the estimate may only fall
        self._shown = False  # whether a status line is on screen, to be cleared before other output
        self._lock = threading.RLock()
        self._timer: threading.Thread | None = None
        self._stop = threading.Event()
        self._time_left: Callable[[], float | None] | None = None  # the time budget's

    def __getstate__(self) -> dict:
        """Ray Tune pickles its callbacks with the experiment state; a stream, a lock and a thread do not
        pickle, so they stay behind (a restored copy writes to stdout, without a timer)."""
        return {**self.__dict__, "stream": None, "clock": None, "_lock": None, "_timer": None, "_stop": None,
                "_time_left": None}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self.stream, self.clock = sys.stdout, time.monotonic
        self._lock, self._timer, self._stop = threading.RLock(), None, threading.Event()

    # ------------------------------------------------------------------------------------------ events
    def begin(self, total: int | None, metric: str, mode: str, max_epochs: int | None = None, *,
              time_left: Callable[[], float | None] | None = None, ended: Iterable[TrialRecord] = ()) -> None:
        """The trials are about to start: the counts start afresh, the clock goes on (the start-up counts).

        ``total``: the search's trials (None: until the time budget is spent); ``time_left``: the seconds of the
        time budget left, shown in the status line; ``ended``: a resumed search's trials, those that ended count.
        """
        with self._lock:
            self.metric, self.mode = metric, mode
            self.state = Snapshot(total=total, max_epochs=max_epochs)
            self._time_left = time_left
            self._trials_started = self.clock()
            self._epochs_seen, self._epochs_now, self._ended_epochs, self._eta = {}, 0, [], None
            for record in ended:
                if record.status in ENDED:
                    self.already_ended(record.name, record.status, record.last(metric), record.epochs)
            self._refresh()
        if self.live and self.verbosity >= NORMAL and self._timer is None:
            self._stop.clear()
            self._timer = threading.Thread(target=self._tick_forever, name="hpsearch-progress", daemon=True)
            self._timer.start()

    def elapsed(self) -> float:
        """Seconds since the display was made: the status line's clock."""
        return self.clock() - self.started

    def message(self, text: str) -> None:
        """An information line from the runner (data loaded, run ids); hidden when quiet."""
        if self.verbosity >= NORMAL:
            self._print(text)

    def detail(self, text: str) -> None:
        """A line only ``--verbose`` shows (what was logged, a figure skipped for want of Graphviz)."""
        if self.verbosity >= VERBOSE:
            self._print(text)

    def warning(self, text: str) -> None:
        """Shown at every level."""
        self._print(f"warning: {text}")

    def trial_started(self, name: str) -> None:
        with self._lock:
            self.state.running_epochs.setdefault(name, 0)
            self.state.running = len(self.state.running_epochs)
            if self.verbosity >= VERBOSE:
                self._print(f"{name} started")
            self._refresh()

    def epoch(self, name: str, epoch: int, metrics: dict[str, float]) -> None:
        with self._lock:
            self._count_epochs(name, epoch)
            if name in self.state.running_epochs:
                self.state.running_epochs[name] = epoch
            if self.verbosity >= VERBOSE:
                shown = "  ".join(f"{k}={number(v)}" for k, v in metrics.items())
                self._print(f"{name} epoch {epoch:>3}  {shown}")
            self._refresh()

    def trial_ended(self, name: str, status: str, epochs: int, value: float | None, error: str | None = None) -> None:
        """A trial finished (completed, stopped or failed): update the counts and the best so far."""
        with self._lock:
            self.ended_names.add(name)
            state = self.state
            state.running_epochs.pop(name, None)
            state.running = len(state.running_epochs)
            self._count_epochs(name, epochs)
            self._ended_epochs.append(epochs)
            self._count(name, status, value)
            self._tick()
            if self.verbosity >= NORMAL and (not self.live or self.verbosity >= VERBOSE or status == "failed"):
                self._print(trial_line(name, status, epochs, self.metric, value, error) + f"  | {self.status_line()}")
            self._refresh()

    def already_ended(self, name: str, status: str, value: float | None, epochs: int | None = None) -> None:
        """A trial that ended before the search was resumed: counted, not announced."""
        with self._lock:
            self._count(name, status, value)
            if epochs:
                self._ended_epochs.append(epochs)
            self._refresh()

    def close(self) -> None:
        """The search is over: stop the timer, leave the last status line on screen and move to a new line."""
        if self._timer is not None:
            self._stop.set()
            self._timer.join()
            self._timer = None
        with self._lock:
            if self._shown:
                self._refresh()
                self.stream.write("\n")
                self.stream.flush()
                self._shown = False

    # ------------------------------------------------------------------------------------------ display
    def status_line(self) -> str:
        """The status line: ``[ 7/20] 2 running (trial_008 e4/20, trial_009 e2/20) | 4 completed 2 stopped 1
        failed | best val_loss 0.1234 (trial_003) | 1m05s, ~2m left``; with a time budget, what is left of it
        (``1m05s, 3m55s of the time budget left``)."""
        self._tick()
        s = self.state
        counts = " ".join(f"{n} {k}" for k, n in s.counts.items() if n) or "none finished"
        best = f"best {self.metric} {number(s.best_value)} ({s.best_trial})" if s.best_trial else "no best yet"
        ends_first = s.eta_s is not None and (s.budget_left_s is None or s.eta_s < s.budget_left_s - 1)
        eta = f", ~{format_duration(s.eta_s)} left" if ends_first else ""
        if s.budget_left_s is not None:
            eta += f", {format_duration(s.budget_left_s)} of the time budget left"
        done = f"{s.done:>{len(str(s.total))}}/{s.total}" if s.total is not None else str(s.done)
        return f"[{done}] {self._running()} | {counts} | {best} | {format_duration(s.elapsed_s)}{eta}"

    def _running(self) -> str:
        """``2 running (trial_003 e4/20, trial_005 e2/20)``: which trials train, and how far they are."""
        s = self.state
        if not s.running_epochs:
            return f"{s.running} running"
        of = f"/{s.max_epochs}" if s.max_epochs else ""
        named = [f"{name} e{epochs}{of}" for name, epochs in list(s.running_epochs.items())[:_RUNNING_SHOWN]]
        more = len(s.running_epochs) - len(named)
        return f"{s.running} running ({', '.join(named)}{f', +{more} more' if more else ''})"

    def _count(self, name: str, status: str, value: float | None) -> None:
        state = self.state
        state.counts[status] = state.counts.get(status, 0) + 1
        if value is not None and (state.best_value is None or _better(value, state.best_value, self.mode)):
            state.best_value, state.best_trial = value, name

    def _count_epochs(self, name: str, epoch: int) -> None:
        """Epochs trained in this session (a resumed trial's first report counts one epoch, not all)."""
        seen = self._epochs_seen.get(name, epoch - 1 if epoch > 0 and name in self.state.running_epochs else 0)
        self._epochs_now += max(0, epoch - seen)
        self._epochs_seen[name] = max(seen, epoch)

    def _tick(self) -> None:
        """Elapsed time, and the rest estimated from the pace so far (epochs trained per second)."""
        s = self.state
        now = self.clock()
        s.elapsed_s = now - self.started
        s.budget_left_s = self._time_left() if self._time_left is not None else None
        estimate = self._estimate(now)
        if estimate is not None and s.budget_left_s is not None:  # the search ends when its budget is spent
            estimate = min(estimate, s.budget_left_s)
        if estimate is not None and self._eta is not None:  # it only falls while the trials run
            estimate = max(0.0, min(estimate, self._eta[0] - (now - self._eta[1])))
        self._eta = (estimate, now) if estimate is not None else None
        s.eta_s = estimate

    def _estimate(self, now: float) -> float | None:
        """Seconds left: the epochs still to train (a trial takes as many as the ended ones did on average, or
        ``max_epochs`` before any ended) at the pace of the epochs trained so far."""
        s = self.state
        if s.total is None or s.done >= s.total or not self._epochs_now or self._trials_started is None:
            return None
        per_trial = (sum(self._ended_epochs) / len(self._ended_epochs)) if self._ended_epochs else s.max_epochs
        if not per_trial:
            return None
        waiting = max(0, s.total - s.done - s.running)
        left = waiting * per_trial + sum(max(0.0, per_trial - e) for e in s.running_epochs.values())
        pace = self._epochs_now / max(now - self._trials_started, 1e-9)
        return left / pace

    def _tick_forever(self) -> None:
        while not self._stop.wait(self.tick_s):
            with self._lock:
                self._refresh()

    def _refresh(self) -> None:
        if self.live and self.verbosity >= NORMAL:
            with self._lock:
                self.stream.write(_CLEAR_LINE + self.status_line()[: _width() - 1])
                self.stream.flush()
                self._shown = True

    def _print(self, text: str) -> None:
        with self._lock:
            if self._shown:
                self.stream.write(_CLEAR_LINE)
                self._shown = False
            self.stream.write(text + "\n")
            self.stream.flush()


def trial_line(name: str, status: str, epochs: int, metric: str, value: float | None, error: str | None) -> str:
    """The line a finished trial gets, whichever executor ran it: ``trial_001 stopped   after   1 epochs
    val_loss=0.9``, or the error's last line for a failed trial."""
    shown = f"{metric}={number(value)}" if value is not None else _last_line(error)
    return f"{name} {status:<9} after {epochs:>3} epochs  {shown}"


def format_duration(seconds: float) -> str:
    """``42s``, ``3m05s``, ``1h02m``: short enough for a status line."""
    seconds = max(0, round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def _better(value: float, than: float, mode: str) -> bool:
    return value < than if mode == "min" else value > than


def _last_line(text: str | None) -> str:
    lines = [line for line in (text or "").strip().splitlines() if line.strip()]
    return lines[-1] if lines else "failed"


def _is_terminal(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def _width() -> int:
    import shutil

    return shutil.get_terminal_size((120, 24)).columns
