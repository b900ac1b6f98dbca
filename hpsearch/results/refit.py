"""``refit=``: the published model trained again on the training and validation rows, at the chosen epoch count.

The search chose its model on the validation rows; refitting then lets those rows train it too, as a user who
refits the winner on all the data they may use would. Each member of the published model (the ensemble's trials,
or the best trial alone) trains again from its configuration and seed, on one model (a cross-validated trial is
refit as one network), for the epochs of its best epoch, on the training rows and the validation rows together.
Its weights after that many epochs are kept: no row is left to choose an epoch by. The test rows stay out.
"""

from __future__ import annotations

import math
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from hpsearch.data.dataset import Dataset, Split
from hpsearch.model.network import save_model
from hpsearch.space import hyperparameters
from hpsearch.tracking.schema import TrialRecord
from hpsearch.training.fit import Trainer, TrialConfig

__all__ = ["refit_members", "refit_published"]


def refit_published(ensemble: Any, best: TrialRecord, trials: list[TrialRecord], data: Dataset,
                    settings: dict[str, Any], threads: float = 1) -> list[dict[str, Any]]:
    """The model the search publishes, refit: the ``ensemble``'s members (an
    :class:`~hpsearch.results.ensemble.Ensemble` of several), or the best trial alone."""
    if ensemble is not None and len(ensemble.members) > 1:
        return refit_members(ensemble.members, trials, data, settings, threads)
    return refit_members([{"trial": best.name, "run_id": best.run_id, "weight": 1.0}], trials, data, settings, threads)


def refit_members(members: list[dict[str, Any]], trials: list[TrialRecord], data: Dataset,
                  settings: dict[str, Any], threads: float = 1) -> list[dict[str, Any]]:
    """The ``members`` (dicts with ``run_id`` and ``weight``, as :class:`~hpsearch.results.ensemble.Ensemble`
    has them) with each model trained again on the training + validation rows (``model_dir`` replaced, and
    ``epochs``). ``settings`` are the search's trial settings (:func:`~hpsearch.execution.sampling.train_settings`).
    """
    by_run = {trial.run_id: trial for trial in trials}
    both = replace(data, train=Split(np.concatenate([data.train.X, data.val.X]),
                                     np.concatenate([data.train.y, data.val.y])))
    previous = torch.get_num_threads()
    torch.set_num_threads(max(1, math.floor(threads)))  # as the trials trained
    try:
        return [_refit(member, by_run[member["run_id"]], both, settings) for member in members]
    finally:
        torch.set_num_threads(previous)


def _refit(member: dict[str, Any], trial: TrialRecord, data: Dataset, settings: dict[str, Any]) -> dict[str, Any]:
    config = TrialConfig.from_params(hyperparameters(trial.params), **{**settings, "cv": 0,
                                                                       "early_stopping_patience": None})
    trainer = Trainer(config, data)
    epochs = max(1, trial.best_epoch)
    for _ in range(epochs):
        trainer.train_epoch()
    folder = Path(tempfile.mkdtemp(prefix="hpsearch-refit-"))
    save_model(trainer.model, trainer.spec, folder, code=trainer.code)
    return {**member, "model_dir": str(folder), "epochs": epochs}
