"""The in-process executor: small searches without Ray (``--executor local``, or chosen by ``auto``).

For a search whose whole training budget takes seconds, starting Ray (imports and ``ray.init``: 6 to 8 s on
2 cores) costs more than the trials. Here Optuna runs in the driver instead: the same seeded sampler, a
successive-halving pruner in place of ASHA (the same rungs: ``grace_period`` and ``reduction_factor``), the
same training function, and the same :class:`~hpsearch.tracking.tracker.TrialTracker`, so MLflow holds exactly what a
Ray search writes (one parent run, one child run per trial, the same params, metrics, tags and model files).
Trials run one after another. A resumed search keeps its ended trials (the searcher is told them first) and
runs its unfinished ones again, from their first epoch, in their own runs. This module never imports Ray.
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
from hpsearch.execution.sampling import RERUN_OF, make_study, queue_unfinished, train_settings
from hpsearch.execution.stopping import Ending
from hpsearch.space import Search, suggest_params
from hpsearch.tracking import tracker as tracking
from hpsearch.tracking.schema import Status, TrialRecord
from hpsearch.training.fit import TrialConfig, fit

__all__ = ["fit_local"]


class _Stopped(Exception):
    """Raised from the report callback to stop a trial at this epoch: the pruner's (``scheduler``), or the search's
    end (its reason)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def fit_local(search: Search, data: Dataset, metric: str, mode: str, tracker: tracking.TrialTracker,
              model_root: Path, progress: Progress, ending: Ending, earlier: list[TrialRecord]) -> None:
    """Run the search's trials in this process, one after another, tracked and shown like Ray trials, until
    ``ending`` says the search is over. ``earlier``: the trials the searcher is told first."""
    threads = torch.get_num_threads()
    torch.set_num_threads(max(1, math.floor(search.resources["cpu"])))  # as a Ray trial with these CPUs
    try:
        _fit_trials(search, data, metric, mode, tracker, model_root, progress, ending, earlier)
    finally:
        torch.set_num_threads(threads)
        progress.close()


def _fit_trials(search: Search, data: Dataset, metric: str, mode: str, tracker: tracking.TrialTracker,
                model_root: Path, progress: Progress, ending: Ending, earlier: list[TrialRecord]) -> None:
    settings = train_settings(search, metric, mode)
    study, _ = make_study(search, metric, mode, earlier, start=not tracker.records)
    again, free = queue_unfinished(study, search, tracker)
    progress.begin(search.num_samples, metric, mode, search.max_epochs, time_left=ending.time_left,
                   ended=tracker.records.values())
    started = len(tracker.records) - again - len(free)
    while ending.may_start(started):
        started += 1
        ending.trial_started()
        trial = study.ask()
        trial_id = trial.user_attrs.get(RERUN_OF) or (free.pop(0) if free else tracker.unused_id("local"))
        config = TrialConfig.from_params({**suggest_params(search.params, trial), **trial.params}, **settings)
        record, stopped = _run_trial(trial, trial_id, config, data, metric, tracker, model_root / trial_id, progress,
                                     ending)
        value = record.metrics.get(metric)
        if record.status == Status.FAILED:
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
        elif stopped == "scheduler":
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
        else:
            study.tell(trial, value)
        ending.trial_ended(record)
        progress.trial_ended(record.name, record.status, record.epochs, record.value(metric), record.error)
    tracker.flush()


def _run_trial(trial: optuna.Trial, trial_id: str, config: TrialConfig, data: Dataset, metric: str,
               tracker: tracking.TrialTracker, model_dir: Path, progress: Progress,
               ending: Ending) -> tuple[TrialRecord, str | None]:
    """Train one trial; returns its record and why it was stopped, if it was (``scheduler`` for the pruner).

    A trial that runs again after a resume replays the epochs MLflow already has (not written twice) and is not
    stopped before it has gone past them, so that its model and its last metrics are of the same epoch.
    """
    record = tracker.trial_started(trial_id, config.to_params())
    name, replayed = record.name, record.epochs
    progress.trial_started(name)
    last: dict[str, Any] = {}

    def report(metrics: dict[str, float], save: Callable[[Path], None]) -> None:
        last.update(metrics=metrics, save=save)  # the model is written once, when the trial ends
        tracker.epoch_reported(trial_id, metrics)
        record = tracker.records[trial_id]
        progress.epoch(name, record.epochs, record.metrics)  # the same figures a Ray trial shows
        epoch = int(metrics["epoch"])
        trial.report(metrics[metric], epoch)
        reason = ending.epoch(metrics[metric])
        if epoch <= replayed:
            return
        if trial.should_prune():
            raise _Stopped("scheduler")
        if reason is not None:
            raise _Stopped(reason)

    stopped = None
    try:
        fit(config, data, report)
    except _Stopped as stop:
        stopped = stop.reason
    except MachineError:  # the tracking store failed under the report: the search cannot go on, nor the trial
        raise
    except Exception:  # noqa: BLE001 - a failing trial is recorded and the search goes on, as with Ray
        return tracker.trial_ended(trial_id, error=traceback.format_exc()), None
    if "save" in last:
        last["save"](model_dir)
    early = bool(last.get("metrics", {}).get("early_stopped"))
    record = tracker.trial_ended(trial_id, model_dir=str(model_dir) if "save" in last else None,
                                 early_stopped=early, stop_reason=None if stopped == "scheduler" else stopped)
    return record, stopped
