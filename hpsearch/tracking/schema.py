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

__all__ = ["FINISHED", "TrialRecord", "Status", "rank"]


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
TAG_SPACE_FILE = "hpsearch.space_file"
TAG_SPACE_SHA256 = "hpsearch.space_sha256"
TAG_DATA_PATH = "hpsearch.data_path"
TAG_BEST_TRIAL = "hpsearch.best_trial"
TAG_BEST_RUN_ID = "hpsearch.best_run_id"
TAG_VERSION_PREFIX = "hpsearch.version."  # + a package name
TAG_WARNING_PREFIX = "hpsearch.warning."  # + a step after the trials that failed: test, plots, publish
TAG_MODEL_VERSION = "hpsearch.model_version"  # the registered model version a search published
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
LOSS_KEYS = ("train_loss", "val_loss")  # kept per epoch in the driver, for a trial's loss-curve PNG
EPOCHS_TRAINED = "epochs_trained"


@dataclass
class TrialRecord:
    """One trial: what the tracker knows while the search runs, and what the reader reads back from its run.

    ``params`` are the trial's values (typed while the search runs, MLflow's strings when read back);
    ``metrics`` the last value of each; ``curves`` the values per epoch (the losses while the search runs,
    every metric when read back).
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
        """The metric at the trial's last epoch: the value the searcher and the ranking saw."""
        return self.metrics.get(metric)


def rank(trials: Iterable[TrialRecord], metric: str, mode: str) -> list[TrialRecord]:
    """Completed and stopped trials with a value for ``metric``, best first (ties keep their start order)."""
    scored = [t for t in trials if t.status in FINISHED and metric in t.metrics]
    return sorted(scored, key=lambda t: t.metrics[metric], reverse=mode == "max")
