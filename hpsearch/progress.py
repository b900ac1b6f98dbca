"""The search's progress in the terminal: counts, the best trial so far, elapsed time and an estimate of the rest.

One object follows the search's trial events (fed by the runner's Tune callback). On a terminal it keeps one
status line up to date in place; in a log (stdout is a file or a pipe) it writes plain lines without escape
codes, one per finished trial, so that ``hpsearch run ... > search.log`` reads top to bottom. Three levels:
``quiet`` (only warnings and the final summary the CLI prints), ``normal`` and ``verbose`` (every trial start and
every epoch's metrics as well).
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from typing import TextIO

__all__ = ["QUIET", "NORMAL", "VERBOSE", "Progress", "Snapshot", "format_duration"]

QUIET, NORMAL, VERBOSE = 0, 1, 2
_CLEAR_LINE = "\r\x1b[K"


@dataclass
class Snapshot:
    """Where the search stands: what the status line shows, as data (tests and the final summary read it)."""

    total: int
    running: int = 0
    counts: dict[str, int] = field(default_factory=lambda: {"completed": 0, "stopped": 0, "failed": 0})
    best_value: float | None = None
    best_trial: str | None = None
    elapsed_s: float = 0.0
    eta_s: float | None = None

    @property
    def done(self) -> int:
        return sum(self.counts.values())


class Progress:
    """Follows trial events and shows them.

    Args:
        verbosity: ``QUIET``, ``NORMAL`` or ``VERBOSE``.
        stream: where to write (stdout by default).
        live: keep one status line updated in place; by default only when ``stream`` is a terminal.
    """

    def __init__(self, verbosity: int = NORMAL, stream: TextIO | None = None, live: bool | None = None) -> None:
        self.verbosity = verbosity
        self.stream = stream or sys.stdout
        self.live = _is_terminal(self.stream) if live is None else live
        self.metric, self.mode = "", "min"
        self.state = Snapshot(total=0)
        self._started = time.monotonic()
        self._shown = False  # whether a status line is on screen, to be cleared before other output

    def __getstate__(self) -> dict:
        """Ray Tune pickles its callbacks with the experiment state; a stream does not pickle, so it stays behind
        (a restored copy writes to stdout)."""
        return {**self.__dict__, "stream": None}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self.stream = sys.stdout

    # ------------------------------------------------------------------------------------------ events
    def begin(self, total: int, metric: str, mode: str) -> None:
        """The trials are about to start: reset the clock (loading data and Ray start-up are not trial time)."""
        self.metric, self.mode = metric, mode
        self.state = Snapshot(total=total)
        self._started = time.monotonic()
        self._refresh()

    def message(self, text: str) -> None:
        """An information line from the runner (data loaded, run ids); hidden when quiet."""
        if self.verbosity >= NORMAL:
            self._print(text)

    def warning(self, text: str) -> None:
        """Shown at every level."""
        self._print(f"warning: {text}")

    def trial_started(self, name: str) -> None:
        self.state.running += 1
        if self.verbosity >= VERBOSE:
            self._print(f"{name} started")
        self._refresh()

    def epoch(self, name: str, epoch: int, metrics: dict[str, float]) -> None:
        if self.verbosity >= VERBOSE:
            shown = "  ".join(f"{k}={v:.4g}" for k, v in metrics.items())
            self._print(f"{name} epoch {epoch:>3}  {shown}")
        self._refresh()

    def trial_ended(self, name: str, status: str, epochs: int, value: float | None, error: str | None = None) -> None:
        """A trial finished (completed, stopped or failed): update the counts and the best so far."""
        state = self.state
        state.running = max(0, state.running - 1)
        state.counts[status] = state.counts.get(status, 0) + 1
        if value is not None and (state.best_value is None or _better(value, state.best_value, self.mode)):
            state.best_value, state.best_trial = value, name
        self._tick()
        if self.verbosity >= NORMAL and (not self.live or self.verbosity >= VERBOSE or status == "failed"):
            shown = f"{self.metric}={value:.4g}" if value is not None else _last_line(error)
            self._print(f"{name} {status:<9} after {epochs:>3} epochs  {shown}  | {self.status_line()}")
        self._refresh()

    def already_ended(self, name: str, status: str, value: float | None) -> None:
        """A trial that ended before the search was resumed: counted, not announced."""
        self.state.counts[status] = self.state.counts.get(status, 0) + 1
        if value is not None and (self.state.best_value is None or _better(value, self.state.best_value, self.mode)):
            self.state.best_value, self.state.best_trial = value, name

    def close(self) -> None:
        """The search is over: leave the last status line on screen and move to a new line."""
        if self._shown:
            self.stream.write("\n")
            self.stream.flush()
            self._shown = False

    # ------------------------------------------------------------------------------------------ display
    def status_line(self) -> str:
        """The status line: ``[ 7/20] 3 running | 4 completed 2 stopped 1 failed | best val_loss 0.1234
        (trial_003) | 1m05s, ~2m left``."""
        self._tick()
        s = self.state
        counts = " ".join(f"{n} {k}" for k, n in s.counts.items() if n) or "none finished"
        best = f"best {self.metric} {s.best_value:.4g} ({s.best_trial})" if s.best_trial else "no best yet"
        eta = f", ~{format_duration(s.eta_s)} left" if s.eta_s is not None else ""
        return (f"[{s.done:>{len(str(s.total))}}/{s.total}] {s.running} running | {counts} | {best} | "
                f"{format_duration(s.elapsed_s)}{eta}")

    def _tick(self) -> None:
        """Elapsed time, and the rest estimated from the pace so far (finished trials per second)."""
        s = self.state
        s.elapsed_s = time.monotonic() - self._started
        s.eta_s = s.elapsed_s / s.done * (s.total - s.done) if s.done else None

    def _refresh(self) -> None:
        if self.live and self.verbosity >= NORMAL:
            self.stream.write(_CLEAR_LINE + self.status_line()[: _width() - 1])
            self.stream.flush()
            self._shown = True

    def _print(self, text: str) -> None:
        if self._shown:
            self.stream.write(_CLEAR_LINE)
            self._shown = False
        self.stream.write(text + "\n")
        self.stream.flush()


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
