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
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna
import torch

from hpsearch.data.sources import Dataset
from hpsearch.errors import MachineError
from hpsearch.execution.progress import Progress
from hpsearch.execution.sampling import make_pruner, make_sampler, train_settings
from hpsearch.space import Search, suggest_params
from hpsearch.tracking import tracker as tracking
from hpsearch.tracking.schema import Status, TrialRecord
from hpsearch.training.fit import TrialConfig, fit

__all__ = ["fit_local"]


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
                                sampler=make_sampler(search), pruner=make_pruner(search))
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
