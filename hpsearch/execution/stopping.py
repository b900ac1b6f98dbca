"""When a search ends, the same on every executor: its trials, its time budget, its patience, or its goal.

A search ends when ``num_samples`` trials have ended (``trials``), when its time budget is spent (``time budget``),
after ``patience`` finished trials without a new best (``patience``), or once a trial reaches the ``goal`` value of
the metric (``goal``). Every executor asks one :class:`Ending`: :meth:`~Ending.may_start` before it starts a
trial (no new trial once the search is ending; but each run of the command starts one, so that a budget spent by
a slow start still gives a model), :meth:`~Ending.reason` at the end of each epoch of a running trial (the trial
then stops there, recorded as ``stopped`` with that reason, its model that epoch's), and tells it every epoch's
value (:meth:`~Ending.epoch`: the goal) and every trial's end (:meth:`~Ending.trial_ended`: the patience). The
time budget counts from the command's start, so that the search's wall time is the budget plus at most an epoch
of its slowest running trial, plus the search's end (test, figures, publishing).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable

from hpsearch.space import Search
from hpsearch.tracking.schema import FINISHED, TrialRecord

__all__ = ["GOAL", "INTERRUPTED", "PATIENCE", "TIME_BUDGET", "TRIALS", "Ending"]

TRIALS, TIME_BUDGET, PATIENCE, GOAL, INTERRUPTED = "trials", "time budget", "patience", "goal", "interrupted"


class Ending:
    """Why and when a search ends (see the module's docstring).

    Args:
        search: its ``num_samples`` (None: no bound), ``time_budget``, ``patience`` and ``goal``.
        metric, mode: what the patience and the goal compare.
        earlier: the trials a resumed search already has, oldest first (its best so far and the trials since).
        started: when the budget's clock started (the command's start), on ``clock``.
    """

    def __init__(self, search: Search, metric: str, mode: str, *, earlier: Iterable[TrialRecord] = (),
                 started: float | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        self.num_samples = search.num_samples
        self.budget_s = search.time_budget
        self.patience, self.goal = search.patience, search.goal
        self.metric, self.mode = metric, mode
        self.clock = clock
        self.started = clock() if started is None else started
        self.deadline = None if self.budget_s is None else self.started + self.budget_s
        self._reason: str | None = None
        self._started = False  # whether this run of the command has started a trial
        self.best: float | None = None
        self.since_best = 0  # finished trials since the best one
        for record in earlier:
            self.trial_ended(record)
        self._reason = None  # what the earlier trials reached ended the earlier search, not this one

    @property
    def may_end_early(self) -> bool:
        """Whether the search can end before its trials do (a budget, a patience or a goal)."""
        return self.budget_s is not None or self.patience is not None or self.goal is not None

    def reason(self) -> str | None:
        """Why the search is ending (a running trial stops at the end of its epoch), or None while it goes on."""
        if self._reason is None and self.deadline is not None and self.clock() >= self.deadline:
            self._reason = TIME_BUDGET
        return self._reason

    def may_start(self, trials: int | None = None) -> bool:
        """Whether a search that has ``trials`` trials (ended or running; None: not counted here, as Ray Tune
        counts them) may start another one now (then say so: :meth:`trial_started`)."""
        if trials is not None and self.num_samples is not None and trials >= self.num_samples:
            return False
        return not self._started or self.reason() is None

    def trial_started(self) -> None:
        """A trial starts (the first of this run of the command starts whatever the budget says)."""
        self._started = True

    def epoch(self, value: float | None) -> str | None:
        """A running trial's metric after an epoch; returns the search's reason to end, if any (the goal)."""
        if self._reason is None and self.goal is not None and value is not None and self._reaches(value, self.goal):
            self._reason = GOAL
        return self.reason()

    def trial_ended(self, record: TrialRecord) -> None:
        """A trial ended: its value counts towards the patience (and the goal, if only its end reported it)."""
        value = record.last(self.metric)
        if record.status not in FINISHED or value is None:
            return
        if self.best is None or self._reaches(value, self.best, strictly=True):
            self.best, self.since_best = value, 0
        else:
            self.since_best += 1
        self.epoch(value)
        if self._reason is None and self.patience is not None and self.since_best >= self.patience:
            self._reason = PATIENCE

    def final_reason(self) -> str:
        """Why the search ended, once its trials are over: its reason, else ``trials``."""
        return self.reason() or TRIALS

    def explain(self, trials: int) -> str:
        """Why the search ended, in words, once it has (``trials``: how many it has)."""
        from hpsearch.execution.progress import format_duration

        reason = self.final_reason()
        if reason == TIME_BUDGET:
            return f"its time budget of {format_duration(self.budget_s)} was spent ({TIME_BUDGET}; trials: {trials})"
        if reason == PATIENCE:
            return f"{self.patience} finished trials in a row brought no new best ({PATIENCE}; trials: {trials})"
        if reason == GOAL:
            return f"a trial reached {self.metric} {'<=' if self.mode == 'min' else '>='} {self.goal:g} ({GOAL})"
        return f"all its trials ended ({TRIALS}: {trials})"

    def time_left(self) -> float | None:
        """Seconds of the budget left (0 once spent), or None without a budget."""
        return None if self.deadline is None else max(0.0, self.deadline - self.clock())

    def deadline_unix(self) -> float | None:
        """The budget's end as a Unix time, for trials in other processes (Ray's)."""
        left = self.time_left()
        return None if left is None else time.time() + left

    def used_s(self) -> float:
        """Seconds since the budget's clock started."""
        return self.clock() - self.started

    def _reaches(self, value: float, than: float, *, strictly: bool = False) -> bool:
        if strictly:
            return value < than if self.mode == "min" else value > than
        return value <= than if self.mode == "min" else value >= than

    def describe(self) -> str:
        """What bounds the search, for its first line: ``20 trials``, ``a time budget of 10m00s``, ..."""
        from hpsearch.execution.progress import format_duration

        parts = [f"{self.num_samples} trials"] if self.num_samples is not None else []
        if self.budget_s is not None:
            parts.append(f"a time budget of {format_duration(self.budget_s)}")
        if self.patience is not None:
            parts.append(f"a patience of {self.patience} trials")
        if self.goal is not None:
            parts.append(f"the goal {self.metric} {'<=' if self.mode == 'min' else '>='} {self.goal:g}")
        return ", ".join(parts[:-1]) + (" or " if len(parts) > 1 else "") + parts[-1]
