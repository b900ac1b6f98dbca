"""A search's end on Ray Tune, through Tune's own stopping: a ``tune.Stopper`` and a searcher that stops proposing.

Once the search's :class:`~hpsearch.execution.stopping.Ending` says it ends (its time budget, its patience, its
goal), the searcher answers Tune's requests for a trial with ``Searcher.FINISHED`` (no new trial starts), and the
stopper stops each running trial at its next report. A trial reports at the end of an epoch, with a checkpoint of
that epoch whenever the search may end early (:class:`~hpsearch.execution.trainable.Reporter`), so a trial stopped
there keeps the model of its last epoch. The stopper never stops every trial at once (``stop_all``, as Tune's
``time_budget_s`` does), which would stop the trials in the middle of an epoch, their models older than their
metrics.

Tune pickles both into its saved state (the tuner, the experiment, the searcher's wrappers); like the run
configuration (:func:`hpsearch.execution.ray_tune._run_config`), they pickle as a reference to this process's
own (:func:`set_today`), so that a restored search ends by today's budget, not by a copy of a past one.
"""

from __future__ import annotations

import functools
from typing import Any

from hpsearch.execution.stopping import Ending
from hpsearch.execution.trainable import epochs_of
from hpsearch.tracking import tracker as tracking

__all__ = ["searcher", "set_today", "stopper"]

_today: dict[str, Any] = {}  # "stopper", "searcher": the objects of the search this process runs


def set_today(**objects: Any) -> None:
    """Make these the objects that a pickled stopper or searcher of ours unpickles as."""
    _today.update(objects)


def _todays(name: str) -> Any:
    """This process's stopper or searcher; None where Ray's saved state is only read (``ExperimentAnalysis``)."""
    return _today.get(name)


def stopper(ending: Ending, tracker: tracking.TrialTracker, metric: str) -> Any:
    """A ``tune.Stopper`` that stops a running trial at its first report once the search ends."""
    return _classes()[0](ending, tracker, metric)


def searcher(inner: Any, ending: Ending, trials: int) -> Any:
    """``inner`` (a ``Searcher``), answering ``FINISHED`` once the search ends or has its trials (``trials``: those
    it has already)."""
    return _classes()[1](inner, ending, trials)


@functools.cache
def _classes() -> tuple[type, type]:
    """The stopper's and the searcher's classes (Ray Tune is imported here, once)."""
    from ray import tune
    from ray.tune.search import Searcher

    class SearchEndStopper(tune.Stopper):
        """Stops a trial at a report once the search ends (and the report has gone past the epochs MLflow
        already holds: a trial resumed from an older checkpoint first trains again to where it was)."""

        def __init__(self, ending: Ending, tracker: tracking.TrialTracker, metric: str) -> None:
            self.ending, self.tracker, self.metric = ending, tracker, metric
            self.reasons: dict[str, str] = {}  # trial id -> why the search's end stopped it

        def __call__(self, trial_id: str, result: dict) -> bool:
            if "epoch" not in result:
                return False
            for metrics in epochs_of(result):
                reason = self.ending.epoch(metrics.get(self.metric))
            record = self.tracker.records.get(trial_id)
            if reason is None or (record is not None and int(result["epoch"]) <= record.epochs):
                return False
            self.reasons[trial_id] = reason
            return True

        def stop_all(self) -> bool:
            return False

        def __reduce__(self) -> tuple:
            return _todays, ("stopper",)

    class EndingSearcher(Searcher):
        """Ray's ``OptunaSearch`` (``self.searcher``, as Tune's own wrappers name it), until the search ends."""

        def __init__(self, inner: Any, ending: Ending, trials: int) -> None:
            self.searcher, self.ending, self.trials = inner, ending, trials
            super().__init__(metric=inner.metric, mode=inner.mode)

        def set_search_properties(self, metric: str | None, mode: str | None, config: dict, **spec: Any) -> bool:
            return self.searcher.set_search_properties(metric, mode, config, **spec)

        def suggest(self, trial_id: str) -> dict | str | None:
            if not self.ending.may_start(self.trials):
                return Searcher.FINISHED
            config = self.searcher.suggest(trial_id)
            if config not in (None, Searcher.FINISHED):
                self.ending.trial_started()
                self.trials += 1
            return config

        def on_trial_result(self, trial_id: str, result: dict) -> None:
            self.searcher.on_trial_result(trial_id, result)

        def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
            self.searcher.on_trial_complete(trial_id, result=result, error=error)

        def get_state(self) -> dict:
            return {}  # the state is the ending's, today's

        def set_state(self, state: dict) -> None:
            pass

        def __reduce__(self) -> tuple:
            return _todays, ("searcher",)

    return SearchEndStopper, EndingSearcher
