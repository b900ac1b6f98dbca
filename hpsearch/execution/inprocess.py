"""The in-process executor: small searches without Ray (``--executor local``, or chosen by ``auto``).

For a search whose whole training budget takes seconds, starting Ray (imports and ``ray.init``: 6 to 8 s on
2 cores) costs more than the trials. Here Optuna runs in the driver instead: the same seeded sampler, a
successive-halving pruner in place of ASHA (the same rungs: ``grace_period`` and ``reduction_factor``), the
same training function, and the same :class:`~hpsearch.tracking.tracker.TrialTracker`, so MLflow holds exactly what a
Ray search writes (one parent run, one child run per trial, the same params, metrics, tags and model files).
Trials run one after another; a search in-process cannot be resumed (``--resume`` needs the Ray executor).
This module never imports Ray.
"""

from __future__ import annotations

import math
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna
import torch

from hpsearch.data.sources import Dataset
from hpsearch.errors import MachineError
from hpsearch.execution.progress import Progress
from hpsearch.model.user_model import UserModel
from hpsearch.space import Search, suggest_params
from hpsearch.tracking import tracker as tracking
from hpsearch.tracking.schema import Status, TrialRecord
from hpsearch.training.fit import TrialConfig, fit

__all__ = ["AUTO_LOCAL_BUDGET", "choose_executor", "fit_local", "make_sampler", "sample_config", "train_settings"]

#: ``auto`` runs a search in-process when trials x epochs x training rows is at most this: a few seconds of
#: training at the loop's speed, far less than Ray's start-up, so parallel trials could not win it back.
AUTO_LOCAL_BUDGET = 100_000
EXECUTORS = ("auto", "ray", "local")


def choose_executor(executor: str, search: Search, n_train: int, *, resume: bool) -> str:
    """``"ray"`` or ``"local"``: ``auto`` picks local for a small CPU budget when no Ray is running here."""
    if executor != "auto":
        return executor
    ray = sys.modules.get("ray")
    ray_running = ray is not None and ray.is_initialized()
    budget = search.num_samples * search.max_epochs * n_train
    small = budget <= AUTO_LOCAL_BUDGET and search.resources["gpu"] == 0
    return "local" if small and not resume and not ray_running else "ray"


def make_sampler(search: Search) -> optuna.samplers.BaseSampler:
    """Optuna's sampler for the search: TPE (seeded), random, or a grid of the space's choices."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if search.searcher == "grid":
        return _GridSampler(search.grid(), seed=search.seed)
    if search.searcher == "random":
        return optuna.samplers.RandomSampler(seed=search.seed)
    # TPE's random start-up phase scaled to the budget, so that short searches still use TPE
    startup = min(10, max(2, search.num_samples // 3))
    return optuna.samplers.TPESampler(seed=search.seed, n_startup_trials=startup)


def train_settings(search: Search, metric: str, mode: str) -> dict[str, Any]:
    """The search's settings of every trial's :class:`TrialConfig` (both executors): the budget, the objective,
    and the space file's own model (``model=``) as its code."""
    return {"max_epochs": search.max_epochs, "seed": search.seed, "metric": metric, "mode": mode,
            "early_stopping_patience": search.early_stopping_patience,
            "user_model": UserModel.of(search.model) if search.model is not None else None}


def sample_config(search: Search, settings: dict[str, Any]) -> TrialConfig:
    """One configuration of the space, as the search's sampler first draws it (for checks before any trial)."""
    trial = optuna.create_study(sampler=make_sampler(search)).ask()
    return TrialConfig.from_params({**suggest_params(search.params, trial), **trial.params}, **settings)


class _GridSampler(optuna.samplers.GridSampler):
    """Optuna's grid sampler without its ``study.stop()`` once the grid is done: that stops ``study.optimize``,
    which no executor uses (they ask and tell exactly as many trials as the grid has), and outside it, it raises
    on the last trial's ``tell``."""

    def after_trial(self, study: optuna.Study, trial: optuna.trial.FrozenTrial, state: optuna.trial.TrialState,
                    values: Any) -> None:
        return None


class _Pruned(Exception):
    """Raised from the report callback when the pruner stops a trial (the scheduler's stop, in Ray's terms)."""


def fit_local(search: Search, data: Dataset, metric: str, mode: str, tracker: tracking.TrialTracker,
              model_root: Path, progress: Progress) -> None:
    """Run every trial of the search in this process, one after another, tracked and shown like Ray trials."""
    threads = torch.get_num_threads()
    torch.set_num_threads(max(1, math.floor(search.resources["cpu"])))  # as a Ray trial with these CPUs
    try:
        _fit_trials(search, data, metric, mode, tracker, model_root, progress)
    finally:
        torch.set_num_threads(threads)
        progress.close()


def _fit_trials(search: Search, data: Dataset, metric: str, mode: str, tracker: tracking.TrialTracker,
                model_root: Path, progress: Progress) -> None:
    settings = train_settings(search, metric, mode)
    study = optuna.create_study(direction="minimize" if mode == "min" else "maximize",
                                sampler=make_sampler(search), pruner=_pruner(search))
    progress.begin(search.num_samples, metric, mode, search.max_epochs)
    for _ in range(search.num_samples):
        trial = study.ask()
        config = TrialConfig.from_params({**suggest_params(search.params, trial), **trial.params}, **settings)
        record, pruned = _run_trial(trial, config, data, metric, tracker, model_root / f"trial_{trial.number:05d}",
                                    progress)
        value = record.metrics.get(metric)
        if record.status == Status.FAILED:
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
        elif pruned:
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
        else:
            study.tell(trial, value)
        progress.trial_ended(record.name, record.status, record.epochs, value, record.error)
    tracker.flush()


def _pruner(search: Search) -> optuna.pruners.BasePruner:
    if search.scheduler is None:
        return optuna.pruners.NopPruner()
    return optuna.pruners.SuccessiveHalvingPruner(min_resource=search.scheduler.grace(search.max_epochs),
                                                  reduction_factor=search.scheduler.reduction_factor)


def _run_trial(trial: optuna.Trial, config: TrialConfig, data: Dataset, metric: str,
               tracker: tracking.TrialTracker, model_dir: Path,
               progress: Progress) -> tuple[TrialRecord, bool]:
    """Train one trial; returns its record and whether the pruner stopped it."""
    trial_id = f"local_{trial.number:05d}"
    name = tracker.trial_started(trial_id, config.to_params()).name
    progress.trial_started(name)
    last: dict[str, Any] = {}

    def report(metrics: dict[str, float], save: Callable[[Path], None]) -> None:
        last.update(metrics=metrics, save=save)  # the model is written once, when the trial ends
        tracker.epoch_reported(trial_id, metrics)
        record = tracker.records[trial_id]
        progress.epoch(name, record.epochs, record.metrics)  # the same figures a Ray trial shows
        trial.report(metrics[metric], int(metrics["epoch"]))
        if trial.should_prune():
            raise _Pruned

    pruned = False
    try:
        fit(config, data, report)
    except _Pruned:
        pruned = True
    except MachineError:  # the tracking store failed under the report: the search cannot go on, nor the trial
        raise
    except Exception:  # noqa: BLE001 - a failing trial is recorded and the search goes on, as with Ray
        return tracker.trial_ended(trial_id, error=traceback.format_exc()), False
    if "save" in last:
        last["save"](model_dir)
    early = bool(last.get("metrics", {}).get("early_stopped"))
    record = tracker.trial_ended(trial_id, model_dir=str(model_dir) if "save" in last else None,
                                 early_stopped=early)
    return record, pruned
