"""How trials are proposed and stopped, for every executor: Optuna's sampler (TPE, random, grid) in a study that
knows the search's earlier trials, the successive-halving pruner at ASHA's rungs, and the settings every trial's
configuration carries. When a search ends before its trials do: :mod:`hpsearch.execution.stopping`.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import optuna

from hpsearch.model.user_model import UserModel
from hpsearch.space import Search, optuna_distributions, suggest_params
from hpsearch.space.defaults import default_point
from hpsearch.tracking.schema import ENDED, TrialRecord
from hpsearch.tracking.study import as_optuna_trial, suggested_values
from hpsearch.training.fit import TrialConfig
from hpsearch.upstream_internals import vectorise_tpe_log_ndtr

if TYPE_CHECKING:
    from hpsearch.tracking.tracker import TrialTracker

__all__ = ["RERUN_OF", "STUDY_NAME", "first_point", "make_pruner", "make_sampler", "make_study", "queue_unfinished",
           "sample_config", "train_settings"]

STUDY_NAME = "optuna"  # the name Ray's OptunaSearch loads a study by, from the storage it is given
RERUN_OF = "hpsearch_trial_id"  # an enqueued trial's user attribute: the trial it runs again


def make_study(search: Search, metric: str, mode: str, earlier: Iterable[TrialRecord] = (), *,
               storage: optuna.storages.BaseStorage | None = None, start: bool = True) -> tuple[optuna.Study, int]:
    """The search's Optuna study (its sampler and pruner), told every earlier trial that fits the search's space
    before it proposes one (a resumed, continued or warm-started search); returns it and how many it was told.

    A search that starts (``start``: no trial of its own yet) and was told nothing asks :func:`first_point` first
    (Optuna's ``enqueue_trial``): the default configuration within the space.

    The study is named :data:`STUDY_NAME` in ``storage`` (a new in-memory one by default), from which Ray's
    ``OptunaSearch`` loads it (its ``storage`` argument): every executor's searcher starts from the same trials.
    """
    study = optuna.create_study(storage=storage or optuna.storages.InMemoryStorage(), study_name=STUDY_NAME,
                                direction="minimize" if mode == "min" else "maximize",
                                sampler=make_sampler(search), pruner=make_pruner(search))
    distributions = search_distributions(search)
    told = 0
    for record in earlier:
        trial = as_optuna_trial(record, distributions, metric, fill=False)
        if trial is not None:
            study.add_trial(trial)
            told += 1
    point = first_point(search) if start and not told else {}
    if point:
        study.enqueue_trial(point)
    return study, told


def queue_unfinished(study: optuna.Study, search: Search, tracker: TrialTracker) -> tuple[int, list[str]]:
    """Queue the trials of a resumed search that did not end to run again, oldest first, with the values they had
    (the next ``ask`` returns them, their trial id in the user attribute :data:`RERUN_OF`).

    Returns how many were queued, and the trial ids whose runs were opened just before a kill, before their
    values were written: the next new trials take those runs (and names). A trial whose values no longer fit the
    space (a space file edited since) has its run deleted.
    """
    queued, free, lost = 0, [], set()
    for record in tracker.records.values():
        if record.status in ENDED:
            continue
        values = suggested_values(record.params, search_distributions(search)) if record.params else None
        if values is not None:
            study.enqueue_trial(values, user_attrs={RERUN_OF: record.trial_id})
            queued += 1
        elif record.params:
            lost.add(record.trial_id)
        else:
            free.append(record.trial_id)
    tracker.forget(lost)
    return queued, free


def search_distributions(search: Search) -> dict[str, Any]:
    """The Optuna distributions the searcher asks with, by the names it uses (the space's ``suggest``)."""
    return {name: dist for param, value in search.searched_params().items()
            for name, dist in optuna_distributions(param, value).items()}


def make_sampler(search: Search) -> optuna.samplers.BaseSampler:
    """Optuna's sampler for the search: TPE (seeded), random, or a grid of the space's choices."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if search.searcher == "grid":
        return _GridSampler(search.grid(), seed=search.seed)
    if search.searcher == "random":
        return optuna.samplers.RandomSampler(seed=search.seed)
    # TPE's random start-up phase scaled to the budget, so that short searches still use TPE
    startup = min(10, max(2, search.num_samples // 3)) if search.num_samples is not None else 10
    vectorise_tpe_log_ndtr()  # the same proposals, about 3x cheaper (hpsearch.upstream_internals)
    return optuna.samplers.TPESampler(seed=search.seed, n_startup_trials=startup)


class _GridSampler(optuna.samplers.GridSampler):
    """Optuna's grid sampler without its ``study.stop()`` once the grid is done: that stops ``study.optimize``,
    which no executor uses (they ask and tell exactly as many trials as the grid has), and outside it, it raises
    on the last trial's ``tell``."""

    def after_trial(self, study: optuna.Study, trial: optuna.trial.FrozenTrial, state: optuna.trial.TrialState,
                    values: Any) -> None:
        return None


def first_point(search: Search) -> dict[str, Any]:
    """The first trial's values: the built-in network's default configuration within the space (empty for a
    grid, which enumerates its own, and for the space file's own model)."""
    if search.searcher == "grid" or search.model is not None:
        return {}
    return default_point(search.params)



def make_pruner(search: Search) -> optuna.pruners.BasePruner:
    """Successive halving at ASHA's rungs (``grace_period``, ``reduction_factor``), or none for ``fifo``."""
    if search.scheduler is None:
        return optuna.pruners.NopPruner()
    return optuna.pruners.SuccessiveHalvingPruner(min_resource=search.scheduler.grace(search.max_epochs),
                                                  reduction_factor=search.scheduler.reduction_factor)


def train_settings(search: Search, metric: str, mode: str) -> dict[str, Any]:
    """The search's settings of every trial's :class:`TrialConfig` (both executors): the budget, the objective,
    and the space file's own model (``model=``) as its code."""
    return {"max_epochs": search.max_epochs, "seed": search.seed, "metric": metric, "mode": mode,
            "early_stopping_patience": search.early_stopping_patience, "cv": search.cv,
            "user_model": UserModel.of(search.model) if search.model is not None else None}


def sample_config(search: Search, settings: dict[str, Any]) -> TrialConfig:
    """One configuration of the space, as the search's sampler first draws it (for checks before any trial)."""
    trial = optuna.create_study(sampler=make_sampler(search)).ask()
    return TrialConfig.from_params({**suggest_params(search.params, trial), **trial.params}, **settings)
