"""The terminal progress display: plain lines in a log, one live line on a terminal, quiet and verbose."""

from __future__ import annotations

import io
import pickle
import sys
import time

from hpsearch.execution.progress import NORMAL, QUIET, VERBOSE, Progress, format_duration


def _search(progress: Progress) -> None:
    """Three trials of a minimising search: one completes, one is stopped, one fails."""
    progress.begin(total=3, metric="val_loss", mode="min")
    progress.message("search abc in experiment 'x'")
    for name in ("trial_000", "trial_001", "trial_002"):
        progress.trial_started(name)
    progress.epoch("trial_000", 1, {"train_loss": 0.9, "val_loss": 0.8})
    progress.trial_ended("trial_001", "stopped", 1, 0.9)
    progress.trial_ended("trial_000", "completed", 3, 0.5)
    progress.trial_ended("trial_002", "failed", 0, None, "Traceback...\nNonFiniteLossError: loss became nan")
    progress.close()


def test_a_log_gets_one_plain_line_per_finished_trial_with_counts_best_and_time():
    out = io.StringIO()
    _search(Progress(NORMAL, stream=out))
    lines = out.getvalue().splitlines()
    assert "\x1b" not in out.getvalue() and "\r" not in out.getvalue()
    assert lines[0] == "search abc in experiment 'x'"
    assert len(lines) == 4
    assert lines[1].startswith("trial_001 stopped   after   1 epochs  val_loss=0.9  | [1/3] 2 running "
                               "(trial_000 e1, trial_002 e0) | 1 stopped")
    assert "[2/3] 1 running (trial_002 e0) | 1 completed 1 stopped | best val_loss 0.5 (trial_000)" in lines[2]
    assert "NonFiniteLossError: loss became nan" in lines[3] and "1 failed" in lines[3]
    assert "left" in lines[1]  # an estimate once a trial has finished


def test_the_snapshot_counts_running_done_and_keeps_the_best_by_mode():
    progress = Progress(QUIET, stream=io.StringIO())
    progress.begin(total=4, metric="val_accuracy", mode="max")
    for name in ("a", "b", "c"):
        progress.trial_started(name)
    progress.trial_ended("a", "completed", 2, 0.7)
    progress.trial_ended("b", "completed", 2, 0.9)
    state = progress.state
    assert (state.running, state.done, state.total) == (1, 2, 4)
    assert (state.best_value, state.best_trial) == (0.9, "b")
    assert state.eta_s is not None and state.eta_s >= 0


def test_a_terminal_gets_one_status_line_rewritten_in_place():
    out = io.StringIO()
    _search(Progress(NORMAL, stream=out, live=True))
    text = out.getvalue()
    assert text.count("\r\x1b[K") >= 5  # redrawn at every event
    visible = [line.rsplit("\r\x1b[K", 1)[-1] for line in text.split("\n")[:-1]]  # what stays on screen
    assert len(visible) == 3 and text.endswith("\n")
    assert visible[0] == "search abc in experiment 'x'"
    assert visible[1].startswith("trial_002 failed") and "NonFiniteLossError" in visible[1]  # failures stay
    assert visible[2].startswith("[3/3] 0 running | 1 completed 1 stopped 1 failed | best val_loss 0.5 (trial_000)")


def test_quiet_shows_only_warnings_and_verbose_shows_starts_and_epochs():
    quiet = io.StringIO()
    progress = Progress(QUIET, stream=quiet, live=True)
    _search(progress)
    progress.warning("plot skipped")
    assert quiet.getvalue() == "warning: plot skipped\n"

    verbose = io.StringIO()
    _search(Progress(VERBOSE, stream=verbose))
    lines = verbose.getvalue().splitlines()
    assert "trial_002 started" in lines
    assert "trial_000 epoch   1  train_loss=0.9  val_loss=0.8" in lines


def test_the_display_pickles_without_its_stream_as_ray_tune_saves_callbacks():
    progress = Progress(NORMAL, stream=io.StringIO())
    progress.begin(total=2, metric="val_loss", mode="min")
    copy = pickle.loads(pickle.dumps(progress))
    assert copy.state.total == 2 and copy.stream is sys.stdout


def test_durations_are_short():
    assert [format_duration(s) for s in (4.4, 65, 3725)] == ["4s", "1m05s", "1h02m"]


class _Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_the_status_line_names_the_running_trials_and_their_epochs():
    progress = Progress(NORMAL, stream=io.StringIO())
    progress.begin(total=8, metric="val_loss", mode="min", max_epochs=20)
    for name in ("trial_003", "trial_005"):
        progress.trial_started(name)
    for epoch in range(1, 5):
        progress.epoch("trial_003", epoch, {"val_loss": 1.0})
    progress.epoch("trial_005", 1, {"val_loss": 1.0})
    progress.epoch("trial_005", 2, {"val_loss": 1.0})
    assert "] 2 running (trial_003 e4/20, trial_005 e2/20) |" in progress.status_line()


def test_a_terminal_status_line_keeps_ticking_while_no_trial_reports():
    out, clock = io.StringIO(), _Clock()
    progress = Progress(NORMAL, stream=out, live=True, clock=clock, tick_s=0.01)
    progress.begin(total=8, metric="val_loss", mode="min", max_epochs=20)
    clock.now = 65.0  # no event at all: a long first epoch
    deadline = time.monotonic() + 5
    while "1m05s" not in out.getvalue() and time.monotonic() < deadline:
        time.sleep(0.01)
    progress.close()
    assert "[0/8] 0 running | none finished | no best yet | 1m05s" in out.getvalue()


def test_the_clock_counts_from_the_start_of_the_command_not_from_the_first_trial():
    clock = _Clock()
    progress = Progress(NORMAL, stream=io.StringIO(), clock=clock)
    clock.now = 8.0  # Ray's start-up and the store
    progress.begin(total=2, metric="val_loss", mode="min")
    clock.now = 10.0
    assert progress.status_line().endswith("| 10s") and progress.elapsed() == 10.0


def test_the_time_left_never_grows_while_long_trials_run():
    clock = _Clock()
    progress = Progress(NORMAL, stream=io.StringIO(), clock=clock)
    progress.begin(total=4, metric="val_loss", mode="min", max_epochs=10)
    progress.trial_started("a")
    progress.trial_started("b")
    seen = []
    for epoch in range(1, 4):  # both trials train fast at first ...
        clock.now += 1.0
        progress.epoch("a", epoch, {})
        progress.epoch("b", epoch, {})
        progress.status_line()
        seen.append(progress.state.eta_s)
    for _ in range(5):  # ... then a long epoch: the pace so far falls, the estimate must not rise
        clock.now += 10.0
        progress.status_line()
        seen.append(progress.state.eta_s)
    assert all(e is not None for e in seen)
    assert all(later <= earlier for earlier, later in zip(seen, seen[1:], strict=False)), seen


def test_a_resumed_search_shows_the_trials_that_ended_before_at_once():
    out = io.StringIO()
    progress = Progress(NORMAL, stream=out, live=True, tick_s=60)
    progress.begin(total=8, metric="val_loss", mode="min")
    progress.already_ended("trial_000", "completed", 0.5, 5)
    progress.already_ended("trial_001", "stopped", 0.7, 1)
    shown = out.getvalue().rsplit("\r\x1b[K", 1)[-1]
    progress.close()
    assert shown.startswith("[2/8] 0 running | 1 completed 1 stopped | best val_loss 0.5 (trial_000)")



def test_with_a_time_budget_the_status_line_shows_what_is_left_of_it_and_counts_trials_without_a_total():
    now = [100.0]
    left = [65.0]
    out = io.StringIO()
    progress = Progress(NORMAL, stream=out, clock=lambda: now[0])
    progress.begin(total=None, metric="val_loss", mode="min", max_epochs=5, time_left=lambda: left[0])
    progress.trial_started("trial_000")
    now[0], left[0] = 110.0, 55.0
    progress.trial_ended("trial_000", "stopped", 2, 0.5)
    assert "[1] 0 running | 1 stopped | best val_loss 0.5 (trial_000) | 10s, 55s of the time budget left" in \
        out.getvalue()
