"""What hpsearch records in MLflow, named once: tags, metric keys, trial statuses, the trial record, the ranking.

The tracker writes with these names, the reader (``best``, ``export``, the figures, the report) and the
executors read with them, so a tag or a status is spelled in one place. Plain Python: it loads without MLflow
or torch (the driver and the figures' process import it).
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

__all__ = ["FINISHED", "TrialRecord", "Status", "rank", "tested_models"]


class Status(enum.StrEnum):
    """A trial's status, as the ``hpsearch.status`` tag of its run holds it."""

    RUNNING = "running"
    COMPLETED = "completed"  # trained for max_epochs
    STOPPED = "stopped"  # stopped by the scheduler or early stopping: its last value still counts
    FAILED = "failed"  # raised, or its loss turned NaN
    KILLED = "killed"  # the search was interrupted while it ran


#: Statuses a trial cannot leave (a killed trial resumes).
ENDED = frozenset({Status.COMPLETED, Status.STOPPED, Status.FAILED})
#: Trials whose last value is a result: the ones a search ranks.
FINISHED = frozenset({Status.COMPLETED, Status.STOPPED})

# --- tags (MLflow's own are spelled out so that this module loads without MLflow)
MLFLOW_PARENT_RUN_ID = "mlflow.parentRunId"
MLFLOW_RUN_NAME = "mlflow.runName"
TAG_KIND = "hpsearch.kind"  # "search" on a parent run, "trial" on a child run, "retrain" on `hpsearch train`'s
KIND_SEARCH, KIND_TRIAL, KIND_RETRAIN = "search", "trial", "retrain"
TAG_STATUS = "hpsearch.status"
TAG_TRIAL_ID = "hpsearch.trial_id"
TAG_ERROR = "hpsearch.error"
TAG_STOP_REASON = "hpsearch.stop_reason"
TAG_NODE = "hpsearch.node"
TAG_NODE_ID = "hpsearch.node_id"
TAG_NODE_IP = "hpsearch.node_ip"
TAG_RAY_EXPERIMENT = "hpsearch.ray_experiment"
TAG_RAY_FIRST_TRIAL = "hpsearch.ray_first_trial"  # the first trial in that Ray folder (the search's continued)
TAG_END_REASON = "hpsearch.end_reason"  # why the search ended: trials, time budget, patience, goal, interrupted
TAG_WARM_START = "hpsearch.warm_start"  # the search whose trials seeded this one's searcher
TAG_SPACE_FILE = "hpsearch.space_file"
TAG_SPACE_SHA256 = "hpsearch.space_sha256"
TAG_DATA_PATH = "hpsearch.data_path"
TAG_BEST_TRIAL = "hpsearch.best_trial"
TAG_BEST_RUN_ID = "hpsearch.best_run_id"
TAG_VERSION_PREFIX = "hpsearch.version."  # + a package name
TAG_WARNING_PREFIX = "hpsearch.warning."  # + a step after the trials that failed: test, plots, publish
TAG_MODEL_VERSION = "hpsearch.model_version"  # the registered model version a search published
TAG_PUBLISHED = "hpsearch.published"  # what that version is: "best_trial" or "ensemble" (results/publish)
TAG_FULL_DATA = "hpsearch.full_data"  # retrain runs: trained on train + validation
TAG_CONFIG_FILE = "hpsearch.config_file"
TAG_SOURCE_TRIAL = "hpsearch.source_trial"
# --- tags of a registered model version
TAG_VERSION_METRIC = "hpsearch.metric"
TAG_VERSION_MODE = "hpsearch.mode"
TAG_VERSION_VALUE = "hpsearch.value"
TAG_VERSION_BEST = "hpsearch.best"

# --- params and metrics
SPACE_PREFIX = "space."  # a parent run's param per searched hyperparameter: Optuna's distribution JSON
METRIC_KEYS = ("train_loss", "val_loss", "val_accuracy", "val_rmse", "val_mae")  # reported every epoch
#: A trial's model is its best epoch's: a trial run's ``best_epoch`` and ``best_<metric>`` (each metric of
#: METRIC_KEYS at that epoch) are logged at every epoch that improves on the search's metric, so their latest
#: values are the best epoch's.
BEST_EPOCH = "best_epoch"
BEST_PREFIX = "best_"
BEST_KEYS = (BEST_EPOCH, *(BEST_PREFIX + key for key in METRIC_KEYS))
EPOCHS_TRAINED = "epochs_trained"


@dataclass
class TrialRecord:
    """One trial: what the tracker knows while the search runs, and what the reader reads back from its run.

    ``params`` are the trial's values (typed while the search runs, MLflow's strings when read back);
    ``metrics`` the last value of each; ``curves`` the values of each per epoch.
    """

    trial_id: str
    run_id: str
    name: str
    params: dict[str, Any]
    status: str = Status.RUNNING
    epochs: int = 0
    metrics: dict[str, float] = field(default_factory=dict)
    model_dir: str | None = None
    error: str | None = None
    node: str | None = None
    curves: dict[str, list[tuple[int, float]]] = field(default_factory=dict)
    start_ms: int = 0
    end_ms: int | None = None

    def last(self, metric: str) -> float | None:
        """The metric at the trial's last epoch: the value the searcher and the scheduler saw."""
        return self.metrics.get(metric)

    def value(self, metric: str) -> float | None:
        """The metric at the trial's best epoch, whose weights are its model: what the ranking, ``best``,
        ``export``, the figures and the published model go by (the last epoch's for a trial recorded without
        it)."""
        return self.metrics.get(BEST_PREFIX + metric, self.metrics.get(metric))

    @property
    def best_epoch(self) -> int:
        """The epoch whose weights are the trial's model (its last, for a trial recorded without it)."""
        return int(self.metrics.get(BEST_EPOCH, self.epochs))


def rank(trials: Iterable[TrialRecord], metric: str, mode: str) -> list[TrialRecord]:
    """Completed and stopped trials with a value for ``metric``, best first by their best epoch's value (ties
    keep their start order)."""
    scored = [t for t in trials if t.status in FINISHED and t.value(metric) is not None]
    return sorted(scored, key=lambda t: t.value(metric), reverse=mode == "max")


# --- what a search tested at its end, on its parent run: best_test_rmse, ensemble_test_rmse, tree_test_rmse, ...
TESTED_BEST, ENSEMBLE_PREFIX, REFIT_PREFIX, TREE_PREFIX = "best_test_", "ensemble_", "refit_", "tree_"
ENSEMBLE_SIZE, REFIT_SIZE = "ensemble_size", "refit_size"  # their distinct members
TREE_NAME = "default HistGradientBoosting"


def tested_models(metrics: dict[str, float], best: str | None) -> list[tuple[str, str, dict[str, float]]]:
    """The models a search tested, from its parent run's metrics: ``("best" | "ensemble" | "refit" | "tree", a
    label, the test metrics without test_)`` for the best trial (named ``best``), the ensemble, the published
    model refit on training + validation rows, and the default tree, those the search has."""
    refit = int(metrics.get(REFIT_SIZE, 0))
    models = []
    for kind, prefix, label in (("best", TESTED_BEST, f"best trial {best}" if best else "best trial"),
                                ("ensemble", f"{ENSEMBLE_PREFIX}test_", _ensemble_label(metrics)),
                                ("refit", f"{REFIT_PREFIX}test_", f"{_of(refit)}, refit on train + validation"),
                                ("tree", f"{TREE_PREFIX}test_", TREE_NAME)):
        figures = {k.removeprefix(prefix): v for k, v in metrics.items() if k.startswith(prefix)}
        if figures:
            models.append((kind, label, figures))
    return models


def _ensemble_label(metrics: dict[str, float]) -> str:
    size = int(metrics.get(ENSEMBLE_SIZE, 0))
    return "ensemble (the best trial alone)" if size <= 1 else _of(size)


def _of(size: int) -> str:
    return f"ensemble of {size} trials" if size > 1 else "best trial"
